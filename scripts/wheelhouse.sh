#!/bin/bash
# Build a wheelhouse on the controller, so that hosts install cvmc with no index at all
# (`pip install --no-index --find-links`): desktops and the coordinator reach no package mirror.
#   scripts/wheelhouse.sh coordinator [DIR]  cvmc[coordinator] and its dependencies for the
#                                            controller's own platform (Linux x86_64, CPython 3.11)
#   scripts/wheelhouse.sh windows [DIR]      the desktop wheel cvmc-agent (no coordinator code;
#                                            scripts/desktop_wheel.py) and its dependencies for
#                                            Windows x86_64, CPython 3.11 (the embeddable
#                                            distribution)
# DIR defaults to .cache/wheelhouse/<target>. The directory is rebuilt in a temporary sibling
# and renamed into place, so a failed build leaves the previous wheelhouse as it was. A
# wheelhouse that is newer than pyproject.toml and src/ (and, for windows, the desktop build
# script) is kept (prints "unchanged").
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/wheelhouse.sh coordinator|windows [DIR]}
out=${2:-.cache/wheelhouse/$target}
pip=${PIP:-.venv/bin/pip}
case $target in
  coordinator | windows) ;;
  *) echo "wheelhouse: unknown target '$target' (coordinator or windows)" >&2; exit 2 ;;
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
  # The agent's runtime dependencies, as pinned in pyproject.toml, built for Windows.
  mapfile -t deps < <("$python" -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
  "$pip" download --quiet --only-binary=:all: --platform win_amd64 --python-version 3.11 \
    --implementation cp --dest "$tmp" "${deps[@]}"
fi
touch "$tmp/.complete"
rm -rf "$out.old"
[[ ! -e $out ]] || mv "$out" "$out.old"
mv "$tmp" "$out"
rm -rf "$out.old"
trap - EXIT
echo "wheelhouse: $out built ($(find "$out" -name '*.whl' | wc -l) wheels)"
