"""The image store for real: HTTP on loopback with Range, a kill mid-download, signatures,
digests, atomic install, LRU eviction, encryption at rest, full disk."""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent.agent_images import entry, make_image, manifest_for
from agent.agent_servers import RangeServer, self_signed

from cvmc.agent.adapters import minisign
from cvmc.agent.adapters.crypto import CHUNK, ChunkReader
from cvmc.agent.adapters.image_store import EncryptedImageStore
from cvmc.agent.adapters.keystore import FileKeyStore, KeyStoreError
from cvmc.agent.ports import ImageError

VM = "its-u11-boinc-20120415"
FILE = "its-u11-boinc-20120415.qcow2"
KEY = bytes(range(32))


@pytest.fixture(scope="module")
def signer() -> minisign.SecretKey:
    return minisign.SecretKey.generate()


def store(
    root: Path, signer: minisign.SecretKey, budget: int = 64 << 20, **kw: Any
) -> EncryptedImageStore:
    """A store for the loopback RangeServer, which speaks plain http unless given ``tls``:
    these tests allow http as a lab does; the https-only rule has its own tests below."""
    kw.setdefault("allow_insecure_http", True)
    return EncryptedImageStore(
        str(root), key=KEY, trusted_keys=[signer.public], budget_bytes=budget, **kw
    )


def test_download_verify_install_and_read_back(signer: minisign.SecretKey, tmp_path: Path) -> None:
    image = make_image(tmp_path / FILE, 3 * 1024 * 1024 + 123)
    server = RangeServer({FILE: str(image)})
    try:
        s = store(tmp_path / "store", signer)
        seen: list[tuple[int, int]] = []
        item = entry(signer, image, VM, f"{server.url}/images/{FILE}")
        manifest = s.ensure(
            item, expect_vm_name=VM, expect_file=FILE, progress=lambda d, t: seen.append((d, t))
        )
        assert seen[-1] == (image.stat().st_size, image.stat().st_size)
        assert [i.sha256 for i in s.installed()] == [manifest.sha256]
        source = s.open(manifest.sha256)
        assert source.read_at(0, 10) == image.read_bytes()[:10]
        assert source.read_at(CHUNK - 5, 10) == image.read_bytes()[CHUNK - 5 : CHUNK + 5]
        source.close()
        s.verify(manifest.sha256)
        # Encrypted at rest: no 4 KiB run of the plaintext appears in the stored file.
        stored = (tmp_path / "store" / f"{manifest.sha256}.img").read_bytes()
        plain = image.read_bytes()
        assert all(plain[i : i + 4096] not in stored for i in range(0, len(plain), 512 * 1024))
        # A second ensure is a cache hit: no request.
        before = len(server.requests)
        s.ensure(item, expect_vm_name=VM, expect_file=FILE)
        assert len(server.requests) == before
    finally:
        server.close()


def test_a_bad_signature_is_refused_before_any_download(
    signer: minisign.SecretKey, tmp_path: Path
) -> None:
    image = make_image(tmp_path / FILE, 100_000)
    server = RangeServer({FILE: str(image)})
    try:
        s = store(tmp_path / "store", signer)
        stranger = minisign.SecretKey.generate()
        with pytest.raises(ImageError, match="not a trusted key") as info:
            s.ensure(
                entry(stranger, image, VM, f"{server.url}/{FILE}"),
                expect_vm_name=VM,
                expect_file=FILE,
            )
        assert info.value.reason == "signature_invalid"
        good = entry(signer, image, VM, f"{server.url}/{FILE}")
        altered = type(good)(
            good.vm_name, good.url, good.manifest.replace(b'"size"', b'"size" '), good.signature
        )
        with pytest.raises(ImageError, match="does not match the signed data"):
            s.ensure(altered, expect_vm_name=VM, expect_file=FILE)
        # A correctly signed manifest for another type is refused too.
        with pytest.raises(ImageError, match="not lab-el9"):
            s.ensure(good, expect_vm_name="lab-el9-bulk-20261101", expect_file=FILE)
        assert server.requests == []
        assert s.installed() == []
    finally:
        server.close()


def test_a_tampered_image_is_discarded_and_never_installed(
    signer: minisign.SecretKey, tmp_path: Path
) -> None:
    image = make_image(tmp_path / FILE, 500_000)
    item = entry(signer, image, VM, "")
    served = tmp_path / "served.qcow2"
    data = bytearray(image.read_bytes())
    data[250_000] ^= 0xFF
    served.write_bytes(bytes(data))
    server = RangeServer({FILE: str(served)})
    try:
        s = store(tmp_path / "store", signer)
        item = type(item)(item.vm_name, f"{server.url}/{FILE}", item.manifest, item.signature)
        with pytest.raises(ImageError, match="does not match the signed manifest") as info:
            s.ensure(item, expect_vm_name=VM, expect_file=FILE)
        assert info.value.reason == "signature_invalid"
        assert s.installed() == []
        assert sorted(os.listdir(tmp_path / "store")) == ["index.json"]
    finally:
        server.close()


DOWNLOADER = """
import sys
from pathlib import Path
from cvmc.agent.adapters import minisign
from cvmc.agent.adapters.image_store import EncryptedImageStore
from cvmc.protocol import CatalogueEntry
root, url, manifest, signature, pub = sys.argv[1:6]
store = EncryptedImageStore(root, key=bytes(range(32)),
    trusted_keys=[minisign.parse_public_key(pub)], budget_bytes=1 << 30,
    allow_insecure_http=True)
store.ensure(CatalogueEntry("its-u11-boinc-20120415", url, Path(manifest).read_bytes(),
    Path(signature).read_text()), expect_vm_name="its-u11-boinc-20120415",
    expect_file="its-u11-boinc-20120415.qcow2")
"""


def test_a_download_killed_half_way_resumes_with_range(
    signer: minisign.SecretKey, tmp_path: Path
) -> None:
    size = 8 * 1024 * 1024
    image = make_image(tmp_path / FILE, size)
    server = RangeServer({FILE: str(image)}, rate_bytes_s=4 * 1024 * 1024)
    root = tmp_path / "store"
    item = entry(signer, image, VM, f"{server.url}/{FILE}")
    (tmp_path / "m.json").write_bytes(item.manifest)
    (tmp_path / "m.sig").write_text(item.signature)
    try:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                DOWNLOADER,
                str(root),
                item.url,
                str(tmp_path / "m.json"),
                str(tmp_path / "m.sig"),
                signer.public.line(),
            ]
        )
        deadline = time.monotonic() + 30
        while server.sent < size * 0.4 and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        first = server.sent
        assert 0 < first < size
        partial = [p for p in os.listdir(root) if p.endswith(".part")]
        assert len(partial) == 1
        server.rate = None
        before = len(server.sent_per_request)
        s = store(root, signer, budget=1 << 30)
        manifest = s.ensure(item, expect_vm_name=VM, expect_file=FILE)
        second = sum(server.sent_per_request[before:])  # the resume's request only
        assert server.requests[-1][1] == f"bytes={s.stats.resumed_from}-"
        assert s.stats.resumed_from > 0
        assert s.stats.resumed_from % CHUNK == 0  # whole sealed chunks survive a kill
        # The network re-reads exactly the missing bytes; what the killed process had
        # received but not yet sealed into a chunk counts as missing.
        assert second == size - s.stats.resumed_from
        assert s.stats.reread == s.stats.resumed_from  # the digest continued from the file
        s.verify(manifest.sha256)
    finally:
        server.close()


def test_a_server_that_ignores_range_restarts_cleanly(
    signer: minisign.SecretKey, tmp_path: Path
) -> None:
    image = make_image(tmp_path / FILE, 600_000)
    server = RangeServer({FILE: str(image)}, honour_range=False)
    root = tmp_path / "store"
    try:
        item = entry(signer, image, VM, f"{server.url}/{FILE}")
        s = store(root, signer)
        # Leave a partial download behind, as a killed agent would.
        from cvmc.agent.adapters.crypto import ChunkWriter  # noqa: PLC0415

        sha = manifest_for(image, VM)
        import json  # noqa: PLC0415

        digest = json.loads(sha)["sha256"]
        writer = ChunkWriter.create(str(root / f"{digest}.part"), KEY, 600_000)
        writer.write(image.read_bytes()[: 3 * CHUNK])
        writer.close()
        s.ensure(item, expect_vm_name=VM, expect_file=FILE)
        assert s.stats.restarts == 1
        s.verify(digest)
    finally:
        server.close()


def test_lru_eviction_under_the_budget(signer: minisign.SecretKey, tmp_path: Path) -> None:
    files = {
        f"img{i}.qcow2": make_image(tmp_path / f"img{i}.qcow2", 1_000_000, seed=i) for i in range(3)
    }
    server = RangeServer({name: str(path) for name, path in files.items()})
    evicted: list[str] = []
    try:
        s = store(tmp_path / "store", signer, budget=2_200_000, on_evict=evicted.append)
        shas = []
        for i, (name, path) in enumerate(files.items()):
            vm = f"vm-type-{i}"
            item = entry(signer, path, vm, f"{server.url}/{name}")
            shas.append(s.ensure(item, expect_vm_name=vm, expect_file=name).sha256)
            if i == 1:
                time.sleep(0.01)
                s.touch(shas[0])  # img0 is used again: img1 becomes the oldest
            time.sleep(0.01)
        installed = {i.sha256 for i in s.installed()}
        assert installed == {shas[0], shas[2]}
        assert evicted == [shas[1]]
        assert s.used_bytes() <= 2_200_000
        # An image in use is never evicted; if nothing else can go, the download is refused.
        s.in_use = lambda: {shas[0], shas[2]}
        with pytest.raises(ImageError, match="images in use fill it") as info:
            s.ensure(
                entry(signer, files["img1.qcow2"], "vm-type-1", f"{server.url}/img1.qcow2"),
                expect_vm_name="vm-type-1",
                expect_file="img1.qcow2",
            )
        assert info.value.reason == "disk_full"
    finally:
        server.close()


def test_a_full_disk_refuses_cleanly(signer: minisign.SecretKey, tmp_path: Path) -> None:
    image = make_image(tmp_path / FILE, 1_000_000)
    server = RangeServer({FILE: str(image)})
    try:
        s = store(tmp_path / "store", signer, free_bytes=lambda _path: 10 * 1024 * 1024)
        with pytest.raises(ImageError, match="MiB free on disk") as info:
            s.ensure(
                entry(signer, image, VM, f"{server.url}/{FILE}"),
                expect_vm_name=VM,
                expect_file=FILE,
            )
        assert info.value.reason == "disk_full"
        assert server.requests == []
        too_big = store(tmp_path / "store2", signer, budget=512 * 1024)
        with pytest.raises(ImageError, match=r"larger than agent\.image_budget_mb"):
            too_big.ensure(
                entry(signer, image, VM, f"{server.url}/{FILE}"),
                expect_vm_name=VM,
                expect_file=FILE,
            )
    finally:
        server.close()


def test_restart_removes_orphans_and_keeps_resumable_partials(
    signer: minisign.SecretKey, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    s = store(root, signer)
    (root / ("a" * 64 + ".img")).write_bytes(b"not in the index")
    (root / ("b" * 64 + ".part")).write_bytes(b"partial")
    (root / "index.json.tmp").write_text("{")
    store(root, signer)
    assert sorted(os.listdir(root)) == ["b" * 64 + ".part", "index.json"]
    del s


def test_stored_bytes_are_authenticated(signer: minisign.SecretKey, tmp_path: Path) -> None:
    image = make_image(tmp_path / FILE, 300_000)
    server = RangeServer({FILE: str(image)})
    try:
        s = store(tmp_path / "store", signer)
        sha = s.ensure(
            entry(signer, image, VM, f"{server.url}/{FILE}"), expect_vm_name=VM, expect_file=FILE
        ).sha256
        path = tmp_path / "store" / f"{sha}.img"
        data = bytearray(path.read_bytes())
        data[100_000] ^= 1
        path.write_bytes(bytes(data))
        with pytest.raises(ImageError, match="does not authenticate"):
            s.verify(sha)
        with pytest.raises(ValueError, match="does not authenticate"):
            ChunkReader(str(path), KEY).read_at(90_000, 20_000)
    finally:
        server.close()


def test_the_key_file_is_0600_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    keys = FileKeyStore(str(tmp_path / "keys" / "store.key"))
    key = keys.master_key()
    assert len(key) == 32
    mode = stat.S_IMODE(os.stat(tmp_path / "keys" / "store.key").st_mode)
    assert mode == 0o600
    assert FileKeyStore(str(tmp_path / "keys" / "store.key")).master_key() == key
    assert keys.subkey("images") != keys.subkey("disk")
    os.chmod(tmp_path / "keys" / "store.key", 0o644)
    with pytest.raises(KeyStoreError, match="must be 0600"):
        FileKeyStore(str(tmp_path / "keys" / "store.key")).master_key()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[str, str]:
    """A throw-away certificate for 127.0.0.1 (cert, key)."""
    directory = tmp_path / "tls"
    directory.mkdir()
    return self_signed(directory)


def https_store(
    root: Path, signer: minisign.SecretKey, tls: tuple[str, str], **kw: Any
) -> EncryptedImageStore:
    """A store as the agent builds it: https only, trusting the loopback certificate."""
    return EncryptedImageStore(
        str(root),
        key=KEY,
        trusted_keys=[signer.public],
        budget_bytes=64 << 20,
        ssl_context=ssl.create_default_context(cafile=tls[0]),
        **kw,
    )


def test_images_download_over_https(
    signer: minisign.SecretKey, tmp_path: Path, tls: tuple[str, str]
) -> None:
    image = make_image(tmp_path / FILE, 300_000)
    server = RangeServer({FILE: str(image)}, tls=tls)
    try:
        s = https_store(tmp_path / "store", signer, tls)
        manifest = s.ensure(
            entry(signer, image, VM, f"{server.url}/{FILE}"), expect_vm_name=VM, expect_file=FILE
        )
        assert [i.sha256 for i in s.installed()] == [manifest.sha256]
    finally:
        server.close()


def test_a_plain_http_url_is_refused_before_any_request(
    signer: minisign.SecretKey, tmp_path: Path
) -> None:
    image = make_image(tmp_path / FILE, 100_000)
    server = RangeServer({FILE: str(image)})  # plain http
    try:
        s = store(tmp_path / "store", signer, allow_insecure_http=False)
        with pytest.raises(ImageError, match=r"plain http://.*grid_images_allow_insecure_http"):
            s.ensure(
                entry(signer, image, VM, f"{server.url}/{FILE}"),
                expect_vm_name=VM,
                expect_file=FILE,
            )
        assert server.requests == []
        assert sorted(os.listdir(tmp_path / "store")) == ["index.json"]
        # A relative URL joins the base URL: the same rule applies to the result.
        s.base_url = server.url
        with pytest.raises(ImageError, match="plain http://"):
            s.ensure(entry(signer, image, VM, f"/{FILE}"), expect_vm_name=VM, expect_file=FILE)
        assert server.requests == []
    finally:
        server.close()


def test_a_redirect_from_https_to_http_is_refused(
    signer: minisign.SecretKey, tmp_path: Path, tls: tuple[str, str]
) -> None:
    image = make_image(tmp_path / FILE, 100_000)
    plain = RangeServer({FILE: str(image)})
    secure = RangeServer({}, tls=tls, redirects={FILE: f"{plain.url}/{FILE}"})
    try:
        s = https_store(tmp_path / "store", signer, tls)
        with pytest.raises(ImageError, match=r"redirects .*plain http://") as info:
            s.ensure(
                entry(signer, image, VM, f"{secure.url}/{FILE}"),
                expect_vm_name=VM,
                expect_file=FILE,
            )
        assert info.value.reason == "image_unavailable"
        assert [name for name, _ in secure.requests] == [FILE]
        assert plain.requests == []  # never followed
        assert s.installed() == []
        # Where the lab allows http, the same redirect is followed and the image installs.
        lab = https_store(tmp_path / "lab", signer, tls, allow_insecure_http=True)
        lab.ensure(
            entry(signer, image, VM, f"{secure.url}/{FILE}"), expect_vm_name=VM, expect_file=FILE
        )
        assert [name for name, _ in plain.requests] == [FILE]
    finally:
        secure.close()
        plain.close()


OLDER, NEWER = "2026-10-01T08:00:00+00:00", "2026-11-15T09:30:00+02:00"


def test_an_older_manifest_is_refused_after_a_newer_one(
    signer: minisign.SecretKey, tmp_path: Path
) -> None:
    old_image = make_image(tmp_path / "old.qcow2", 100_000, seed=1)
    new_image = make_image(tmp_path / "new.qcow2", 100_000, seed=2)
    server = RangeServer({"old.qcow2": str(old_image), "new.qcow2": str(new_image)})
    try:
        s = store(tmp_path / "store", signer)
        new = entry(signer, new_image, VM, f"{server.url}/new.qcow2", file_name=FILE, created=NEWER)
        old = entry(signer, old_image, VM, f"{server.url}/old.qcow2", file_name=FILE, created=OLDER)
        accepted = s.ensure(new, expect_vm_name=VM, expect_file=FILE)
        requests = len(server.requests)
        with pytest.raises(ImageError, match="never goes back to an older one") as info:
            s.ensure(old, expect_vm_name=VM, expect_file=FILE)
        assert info.value.reason == "image_rollback"
        assert len(server.requests) == requests  # nothing fetched
        assert [i.sha256 for i in s.installed()] == [accepted.sha256]
        # The same manifest again is fine (a cache hit, or a re-download once evicted).
        assert s.ensure(new, expect_vm_name=VM, expect_file=FILE).sha256 == accepted.sha256
        s.gc(set(), need=64 << 20)  # evict everything
        assert s.installed() == []
        assert s.ensure(new, expect_vm_name=VM, expect_file=FILE).sha256 == accepted.sha256
        # Another image signed at the very same time cannot be ordered: refused too.
        same_time = entry(
            signer, old_image, VM, f"{server.url}/old.qcow2", file_name=FILE, created=NEWER
        )
        with pytest.raises(ImageError, match="image never goes back") as info:
            s.ensure(same_time, expect_vm_name=VM, expect_file=FILE)
        assert info.value.reason == "image_rollback"
    finally:
        server.close()


def test_an_old_image_still_cached_is_refused_once_a_newer_one_was_accepted(
    signer: minisign.SecretKey, tmp_path: Path
) -> None:
    old_image = make_image(tmp_path / "old.qcow2", 100_000, seed=1)
    new_image = make_image(tmp_path / "new.qcow2", 100_000, seed=2)
    server = RangeServer({"old.qcow2": str(old_image), "new.qcow2": str(new_image)})
    try:
        s = store(tmp_path / "store", signer)
        old = entry(signer, old_image, VM, f"{server.url}/old.qcow2", file_name=FILE, created=OLDER)
        new = entry(signer, new_image, VM, f"{server.url}/new.qcow2", file_name=FILE, created=NEWER)
        s.ensure(old, expect_vm_name=VM, expect_file=FILE)  # first seen: accepted
        s.ensure(new, expect_vm_name=VM, expect_file=FILE)  # an update: accepted
        with pytest.raises(ImageError) as info:
            s.ensure(old, expect_vm_name=VM, expect_file=FILE)
        assert info.value.reason == "image_rollback"
        # Another VM type has its own floor.
        other = "lab-el9-bulk-20261101"
        s.ensure(
            entry(signer, old_image, other, f"{server.url}/old.qcow2", created=OLDER),
            expect_vm_name=other,
            expect_file="old.qcow2",
        )
    finally:
        server.close()


def test_the_floor_survives_a_restart_and_a_lost_file(
    signer: minisign.SecretKey, tmp_path: Path
) -> None:
    old_image = make_image(tmp_path / "old.qcow2", 100_000, seed=1)
    new_image = make_image(tmp_path / "new.qcow2", 100_000, seed=2)
    server = RangeServer({"old.qcow2": str(old_image), "new.qcow2": str(new_image)})
    root = tmp_path / "store"
    old = entry(signer, old_image, VM, f"{server.url}/old.qcow2", file_name=FILE, created=OLDER)
    new = entry(signer, new_image, VM, f"{server.url}/new.qcow2", file_name=FILE, created=NEWER)
    try:
        first = store(root, signer)
        accepted = first.ensure(new, expect_vm_name=VM, expect_file=FILE)
        first.gc(set(), need=64 << 20)  # evicted: only newest.json remembers it
        assert first.installed() == []
        saved = json.loads((root / "newest.json").read_text())
        assert saved == {VM: {"created": NEWER, "sha256": accepted.sha256}}
        assert stat.S_IMODE((root / "newest.json").stat().st_mode) == 0o600
        assert not [n for n in os.listdir(root) if ".tmp" in n]
        # A new agent process (a restart) refuses the older manifest.
        with pytest.raises(ImageError) as info:
            store(root, signer).ensure(old, expect_vm_name=VM, expect_file=FILE)
        assert info.value.reason == "image_rollback"
        # With the image installed and newest.json gone or damaged, the installed image's own
        # signed manifest still sets the floor.
        again = store(root, signer)
        again.ensure(new, expect_vm_name=VM, expect_file=FILE)
        for damage in ("", "{not json"):
            (root / "newest.json").write_text(damage)
            with pytest.raises(ImageError) as info:
                store(root, signer).ensure(old, expect_vm_name=VM, expect_file=FILE)
            assert info.value.reason == "image_rollback"
        (root / "newest.json").unlink()
        with pytest.raises(ImageError) as info:
            store(root, signer).ensure(old, expect_vm_name=VM, expect_file=FILE)
        assert info.value.reason == "image_rollback"
    finally:
        server.close()
