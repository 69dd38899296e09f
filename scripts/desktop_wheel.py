"""Build the desktop wheel, ``cvmc-agent``: the agent, the protocol and the grid model, no more.

cvmc has two distributions (docs/design.md, Distributions):

- ``cvmc``, the repository's pyproject.toml: everything, the coordinator included. Developers
  install it editable (``pip install -e .``), the controller's venv and the tests import the
  coordinator from src/, and the coordinator host installs it (``scripts/wheelhouse.sh
  coordinator``) with its extra ``coordinator``.
- ``cvmc-agent``, built here: the packages ``cvmc``, ``cvmc.agent``, ``cvmc.protocol`` and
  ``cvmc.gridmodel``, the ``cvmc`` console script and the agent's pinned runtime dependencies,
  and no ``cvmc.coordinator``. Desktops install it (``scripts/wheelhouse.sh windows``).

The desktop build has no pyproject.toml of its own to keep in step: this script derives one
from the repository's (same version, licence, Python and pinned dependencies; only the
``cvmc`` script; no extras) and writes it into a staging directory beside a copy of src/cvmc
without src/cvmc/coordinator, then lets pip build the wheel there. So a version or a pin is
changed in one place, the repository keeps one pyproject.toml at its top level, and nothing
of the coordinator is in the build tree that setuptools could pick up. The staging copy also
keeps the build's own files (build/, *.egg-info) out of src/.

usage: python scripts/desktop_wheel.py --wheel-dir DIR [--no-build-isolation]

prints the wheel's path. ``--no-build-isolation`` builds with the running interpreter's
setuptools (no package index needed); without it pip fetches the build backend that
pyproject.toml's [build-system] names, as for the full wheel.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NAME = "cvmc-agent"
PACKAGES = ("cvmc", "cvmc.agent*", "cvmc.protocol*", "cvmc.gridmodel*")
# The controller's packages, left out of the staging copy: the coordinator, and the glue the
# Ansible filter plugins share (src/cvmc/ansible).
EXCLUDED = ("coordinator", "ansible")
SCRIPT = "cvmc"  # the agent's console script; cvmc-coordinator is left out


def _toml(value: str | list[str]) -> str:
    # JSON strings and arrays of strings are valid TOML basic strings and arrays.
    return json.dumps(value)


def desktop_pyproject(root: dict[str, Any]) -> str:
    """The desktop distribution's pyproject.toml, derived from the repository's."""
    project = root["project"]
    entry = project["scripts"][SCRIPT]
    if not entry.startswith("cvmc.agent."):
        raise ValueError(f"[project.scripts] {SCRIPT} = {entry!r} is not the agent's")
    package_data = root["tool"]["setuptools"]["package-data"]["cvmc"]
    lines = [
        "# Derived from the repository's pyproject.toml by scripts/desktop_wheel.py; not kept.",
        "[build-system]",
        f"requires = {_toml(root['build-system']['requires'])}",
        f"build-backend = {_toml(root['build-system']['build-backend'])}",
        "",
        "[project]",
        f"name = {_toml(NAME)}",
        f"version = {_toml(project['version'])}",
        'description = "Condor VM Coordinator: the desktop agent, its wire protocol and the '
        'shared grid model"',
        f"readme = {_toml(project['readme'])}",
        f"requires-python = {_toml(project['requires-python'])}",
        f"license = {_toml(project['license'])}",
        f"dependencies = {_toml(project['dependencies'])}",
        "",
        "[project.scripts]",
        f"{SCRIPT} = {_toml(entry)}",
        "",
        "[tool.setuptools.packages.find]",
        'where = ["src"]',
        f"include = {_toml(list(PACKAGES))}",
        f"exclude = {_toml([f'cvmc.{n}{tail}' for n in EXCLUDED for tail in ('', '.*')])}",
        "",
        "[tool.setuptools.package-data]",
        f"cvmc = {_toml(package_data)}",
        "",
    ]
    return "\n".join(lines)


def _ignore(directory: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".pyc"))}
    if Path(directory) == ROOT / "src" / "cvmc":
        skip.update(EXCLUDED)
    return skip


def stage(into: Path) -> None:
    """Lay out the desktop build tree in ``into``: pyproject.toml, README, src/cvmc."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (into / "pyproject.toml").write_text(desktop_pyproject(root), encoding="utf-8")
    shutil.copy2(ROOT / root["project"]["readme"], into / root["project"]["readme"])
    shutil.copytree(ROOT / "src" / "cvmc", into / "src" / "cvmc", ignore=_ignore)


def build(wheel_dir: Path, *, isolation: bool = True) -> Path:
    """Build the desktop wheel into ``wheel_dir``; its path."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cvmc-desktop-") as tmp:
        tree, out = Path(tmp) / "tree", Path(tmp) / "out"
        tree.mkdir()
        stage(tree)
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
        cmd += [] if isolation else ["--no-build-isolation"]
        subprocess.run([*cmd, "--wheel-dir", str(out), str(tree)], check=True)  # noqa: S603
        (wheel,) = out.glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            leaked = [
                n for n in archive.namelist() if n.startswith(tuple(f"cvmc/{e}/" for e in EXCLUDED))
            ]
        if leaked:
            raise RuntimeError(f"{wheel.name} holds controller files: {leaked[:3]}")
        return Path(shutil.move(wheel, wheel_dir / wheel.name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", type=Path, required=True)
    parser.add_argument("--no-build-isolation", action="store_true")
    args = parser.parse_args(argv)
    print(build(args.wheel_dir, isolation=not args.no_build_isolation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
