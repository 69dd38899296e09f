#!/bin/bash
# Build a wheelhouse on the controller, so that hosts install cvmc with no index at all
# (`pip install --no-index --find-links`): desktops and the coordinator reach no package mirror.
#   scripts/wheelhouse.sh coordinator [DIR]  cvmc[coordinator] and its dependencies for the
#                                            controller's own platform (Linux x86_64, CPython 3.11)
#   scripts/wheelhouse.sh windows [DIR]      the desktop wheel cvmc-agent (no coordinator code;
#                                            scripts/desktop_wheel.py) and its dependencies for
#                                            Windows x86_64, CPython 3.11 (the embeddable
#                                            distribution)
#   scripts/wheelhouse.sh linux [DIR]        the same desktop wheel and its dependencies for
#                                            Linux x86_64 (manylinux), CPython 3.11, 3.12 and
#                                            3.13 (Debian 12 and 13, Ubuntu 24.04, EL9's
#                                            python3.11): abi3 wheels fit them all, and a
#                                            dependency without one (cffi) comes once per version
# DIR defaults to .cache/wheelhouse/<target>. The directory is rebuilt in a temporary sibling
# and renamed into place, so a failed build leaves the previous wheelhouse as it was. A
# wheelhouse that is newer than pyproject.toml and src/ (and, for the desktops, the desktop build
# script) is kept (prints "unchanged").
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/wheelhouse.sh coordinator|windows|linux [DIR]}
out=${2:-.cache/wheelhouse/$target}
pip=${PIP:-.venv/bin/pip}
case $target in
  coordinator | windows | linux) ;;
  *) echo "wheelhouse: unknown target '$target' (coordinator, windows or linux)" >&2; exit 2 ;;
esac
python=$(dirname "$pip")/python
sources=(pyproject.toml src)
[[ $target == coordinator ]] || sources+=(scripts/desktop_wheel.py)
# Build metadata (egg-info of an editable install) and byte code are not sources.
if [[ -f $out/.complete ]] && [[ -z $(find "${sources[@]}" \( -name '*.egg-info' -o -name __pycache__ \) \
  -prune -o -newer "$out/.complete" -print -quit) ]]; then
  echo "wheelhouse: $out unchanged"
  exit 0
fi
tmp=$(mktemp -d "$(dirname "$out")/.wheelhouse.XXXXXX" 2>/dev/null || { mkdir -p "$(dirname "$out")"; mktemp -d "$(dirname "$out")/.wheelhouse.XXXXXX"; })
trap 'rm -rf "$tmp"' EXIT
if [[ $target == coordinator ]]; then
  # The full distribution, cvmc, with the coordinator and its extra's dependencies.
  "$pip" wheel --quiet --no-deps --wheel-dir "$tmp" .
  "$pip" wheel --quiet --wheel-dir "$tmp" ".[coordinator]"
else
  # Desktops install the desktop distribution, cvmc-agent: cvmc without cvmc.coordinator.
  "$python" scripts/desktop_wheel.py --wheel-dir "$tmp" >/dev/null
  # The agent's runtime dependencies, as pinned in pyproject.toml, built for the desktops.
  mapfile -t deps < <("$python" -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
  if [[ $target == windows ]]; then
    "$pip" download --quiet --only-binary=:all: --platform win_amd64 --python-version 3.11 \
      --implementation cp --dest "$tmp" "${deps[@]}"
  else
    # glibc 2.28 or later (manylinux_2_28 and older tags): EL9 has 2.34, Debian 12 2.36.
    for version in 3.11 3.12 3.13; do
      "$pip" download --quiet --only-binary=:all: --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --python-version "$version" --implementation cp --dest "$tmp" "${deps[@]}"
    done
  fi
fi
touch "$tmp/.complete"
rm -rf "$out.old"
[[ ! -e $out ]] || mv "$out" "$out.old"
mv "$tmp" "$out"
rm -rf "$out.old"
trap - EXIT
echo "wheelhouse: $out built ($(find "$out" -name '*.whl' | wc -l) wheels)"
