#!/usr/bin/env bash
# Make the project's virtual environment, or keep a complete one: `make venv` calls this, then
# installs requirements.txt and the project into it and touches VENV_DIR/.installed last.
#   PYTHON=python3 bash scripts/venv.sh .venv
#
# - A venv without bin/pip or without the .installed marker is half-made (`python3 -m venv`
#   failed part-way, or a pip install stopped): it is removed and made again, never reused.
# - Debian's python3 has no ensurepip, so no working `python3 -m venv`, without the
#   python3-venv package (python3.X-venv for another Debian python3.X). As root it is
#   installed with apt; otherwise the error names it.
# - PYTHON (default python3) is the interpreter the venv is made from, never the venv's own.
set -euo pipefail

venv=${1:?usage: venv.sh VENV_DIR}
python=${PYTHON:-python3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'venv: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ -e "$venv" ]; then
  if [ -x "$venv/bin/pip" ] && [ -f "$venv/.installed" ]; then
    exit 0
  fi
  log "removing the half-made $venv (no bin/pip or no .installed marker); making it again"
  rm -rf -- "$venv"
fi

# The Makefile puts the venv's bin first on PATH: look PYTHON up without it.
venv_bin=$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")/bin
PATH=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$venv_bin" | paste -sd: -)
command -v "$python" >/dev/null || die "'$python' not found; install Python 3.11 or later, or set PYTHON"

venv_works() { "$python" -c 'import ensurepip, venv' 2>/dev/null; }

# The Debian package with this interpreter's ensurepip, if Debian installed the interpreter.
debian_venv_package() {
  local exe
  command -v dpkg >/dev/null || return 1
  exe=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))') || return 1
  dpkg -S "$exe" >/dev/null 2>&1 || return 1
  if [ "$(readlink -f /usr/bin/python3 2>/dev/null)" = "$exe" ]; then
    echo python3-venv
  else
    "$python" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])'
  fi
}

if ! venv_works; then
  pkg=$(debian_venv_package) \
    || die "$python cannot make a virtual environment ('import ensurepip, venv' fails); use a Python that can, with PYTHON=/path/to/python3"
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    die "$pkg is installed, but $python still cannot import ensurepip and venv"
  fi
  if [ "$(id -u)" -ne 0 ]; then
    die "$python cannot make a virtual environment: Debian's $pkg package is missing. Install it (sudo apt-get install $pkg), then run make again"
  fi
  log "installing $pkg: $python cannot make a virtual environment without it"
  # shellcheck source=scripts/apt.sh
  . "$here/apt.sh"
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "$pkg" >/dev/null
  venv_works || die "$pkg is installed, but $python still cannot import ensurepip and venv"
fi

log "making $venv with $(command -v "$python") ($("$python" --version 2>&1))"
if ! "$python" -m venv "$venv"; then
  rm -rf -- "$venv"
  die "'$python -m venv $venv' failed (above); removed $venv"
fi
if [ ! -x "$venv/bin/pip" ]; then
  rm -rf -- "$venv"
  die "'$python -m venv $venv' made no $venv/bin/pip; removed $venv"
fi
