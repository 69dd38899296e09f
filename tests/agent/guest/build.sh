#!/bin/bash
# Build the agent's tiny QEMU test guest from Debian packages only, into $1 (default
# .cache/agent-guest): a Debian kernel (linux-image-amd64, via apt-get download) and a
# busybox-static initramfs on a bootable FAT disk (syslinux), converted to qcow2.
# The guest's init prints the NoCloud seed it finds, waits for the ACPI power button and
# powers off: exactly what the agent's QEMU driver needs to prove.
# Rebuilt only when this script changes (its hash is stamped next to the image).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../../.cache/agent-guest}
mkdir -p "$out"
out=$(cd "$out" && pwd)
stamp=$(sha256sum "$0" | cut -c1-16)
if [[ -f $out/guest.qcow2 && "$(cat "$out/stamp" 2>/dev/null)" == "$stamp" ]]; then
  exit 0
fi
for tool in apt-get dpkg-deb busybox syslinux mkfs.vfat mcopy cpio qemu-img; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing; run scripts/test-deps.sh" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# The metapackage names the current kernel package; fetch that one (no install).
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $kpkg ]] || { echo "build.sh: apt-cache names no kernel for linux-image-amd64 (run apt-get update)" >&2; exit 1; }
apt-get download "$kpkg" >/dev/null 2>&1 || (chmod 777 "$work" && apt-get download "$kpkg" >/dev/null)
dpkg-deb -x ./*.deb kernel
kver=${kpkg#linux-image-}
mods=kernel/lib/modules/$kver/kernel
mkdir -p initrd/{bin,dev,proc,sys,seed,lib/modules}
cp "$(command -v busybox)" initrd/bin/busybox
# Modules in load order (virtio bus, block, iso9660, input events, ACPI power button).
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
  drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk \
  drivers/cdrom/cdrom fs/isofs/isofs drivers/input/evdev drivers/acpi/button; do
  cp "$mods/$m.ko" initrd/lib/modules/
  echo "$(basename "$m")" >>initrd/lib/modules/order
done
cat >initrd/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "cvmc-guest: insmod $m failed"; done
echo "cvmc-guest: booted"
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vdb ] && break; sleep 0.2; done
echo "cvmc-guest: disks $(echo /dev/vd?)"
for d in /dev/vd?; do
  if mount -t iso9660 -o ro "$d" /seed 2>/dev/null; then
    ls /seed
    if [ -f /seed/meta-data ]; then
      echo "cvmc-guest: seed on $d"
      echo "cvmc-guest: meta-data begin"; cat /seed/meta-data; echo "cvmc-guest: meta-data end"
      echo "cvmc-guest: user-data bytes $(wc -c </seed/user-data)"
      break
    fi
    umount /seed
  fi
done
# Prove the boot disk is writable: a marker in the unused tail (the slot's overlay takes it).
echo "cvmc-guest-wrote-this" | dd of=/dev/vda bs=1M seek=36 conv=notrunc 2>/dev/null && sync
power=""
for e in /sys/class/input/event*; do
  if [ "$(cat "$e/device/name" 2>/dev/null)" = "Power Button" ]; then power=/dev/input/${e##*/}; fi
done
echo "cvmc-guest: waiting for the power button on ${power:-nothing}"
dd if="$power" of=/dev/null bs=24 count=1 2>/dev/null
echo "cvmc-guest: power button pressed, powering off"
poweroff -f
INIT
chmod 755 initrd/init
(cd initrd && find . | cpio -o -H newc --quiet | gzip -9) >initrd.img
# A 32 MiB FAT volume with syslinux in its boot sector, in a 40 MiB disk (the tail is free).
mkfs.vfat -C -n CVMCGUEST disk.img 32768 >/dev/null
syslinux --install disk.img
cat >syslinux.cfg <<'CFG'
DEFAULT guest
PROMPT 0
TIMEOUT 0
LABEL guest
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND console=ttyS0 quiet loglevel=3 panic=-1
CFG
mcopy -i disk.img "kernel/boot/vmlinuz-$kver" ::vmlinuz
mcopy -i disk.img initrd.img ::initrd.img
mcopy -i disk.img syslinux.cfg ::syslinux.cfg
truncate -s 40M disk.img
qemu-img convert -q -f raw -O qcow2 disk.img "$out/guest.qcow2.tmp"
mv "$out/guest.qcow2.tmp" "$out/guest.qcow2"
echo "$stamp" >"$out/stamp"
echo "build.sh: built $out/guest.qcow2 from $kpkg"
