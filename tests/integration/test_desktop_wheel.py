"""The desktop wheel (scripts/desktop_wheel.py): the agent, the protocol and the grid model only.

Real: pip builds the wheel from the staging tree with setuptools, and the wheel's modules are
imported from an unpacked copy of it. The build uses the test interpreter's setuptools (no
package index) when it is as recent as pyproject.toml's [build-system] asks (requirements.txt
pins one); otherwise pip fetches that backend, as scripts/wheelhouse.sh does.
"""

from __future__ import annotations

import configparser
import email.parser
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# The oldest setuptools pyproject.toml's [build-system] accepts (77: PEP 639 licences).
(MIN_SETUPTOOLS,) = (
    int(r.partition(">=")[2].split(".")[0])
    for r in PYPROJECT["build-system"]["requires"]
    if r.startswith("setuptools>=")
)


def _setuptools_is_recent() -> bool:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return int(version.split(".")[0]) >= MIN_SETUPTOOLS


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("desktop-wheel")
    cmd = [sys.executable, str(ROOT / "scripts/desktop_wheel.py"), "--wheel-dir", str(out)]
    if _setuptools_is_recent():
        cmd.append("--no-build-isolation")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path.parent == out
    assert [p.name for p in out.iterdir()] == [path.name]
    return path


@pytest.fixture(scope="module")
def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def _dist_info_file(wheel: Path, name: str) -> str:
    version = PYPROJECT["project"]["version"]
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(f"cvmc_agent-{version}.dist-info/{name}").decode()


def test_the_wheel_is_the_desktop_distribution(wheel: Path) -> None:
    assert wheel.name == f"cvmc_agent-{PYPROJECT['project']['version']}-py3-none-any.whl"


def test_it_holds_the_agent_the_protocol_and_the_grid_model(names: list[str]) -> None:
    for package in ("agent", "protocol", "gridmodel"):
        sources = {
            p.relative_to(ROOT / "src").as_posix()
            for p in (ROOT / "src/cvmc" / package).rglob("*.py")
        }
        assert sources, package
        missing = sources - set(names)
        assert not missing, f"cvmc/{package} files missing from the wheel: {sorted(missing)}"
    assert "cvmc/__init__.py" in names
    assert "cvmc/py.typed" in names


def test_it_holds_no_coordinator_file(names: list[str]) -> None:
    coordinator = [n for n in names if n.startswith("cvmc/coordinator")]
    assert coordinator == []
    # Nor the controller's glue for the Ansible filter plugins.
    assert [n for n in names if n.startswith("cvmc/ansible")] == []
    assert not [n for n in names if "static/" in n or "migrations/" in n]
    assert {n.split("/")[0] for n in names} == {
        "cvmc",
        f"cvmc_agent-{PYPROJECT['project']['version']}.dist-info",
    }


def test_its_only_console_script_is_the_agents(wheel: Path) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_dist_info_file(wheel, "entry_points.txt"))
    assert entry_points.sections() == ["console_scripts"]
    assert dict(entry_points["console_scripts"]) == {"cvmc": "cvmc.agent.entrypoints.cli:main"}
    assert dict(entry_points["console_scripts"])["cvmc"] == PYPROJECT["project"]["scripts"]["cvmc"]


def test_it_requires_the_agents_runtime_dependencies_only(wheel: Path) -> None:
    meta = email.parser.Parser().parsestr(_dist_info_file(wheel, "METADATA"))
    assert meta["Name"] == "cvmc-agent"
    assert meta["Version"] == PYPROJECT["project"]["version"]
    assert meta["Requires-Python"] == PYPROJECT["project"]["requires-python"]
    requires = meta.get_all("Requires-Dist") or []
    assert requires == PYPROJECT["project"]["dependencies"]
    assert sorted(r.split("==")[0] for r in requires) == ["cryptography", "psutil"]
    assert all("==" in r for r in requires), requires  # pinned
    assert meta.get_all("Provides-Extra") is None  # no coordinator extra


def test_every_module_imports_from_the_wheel_alone(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    probe = """
import importlib, importlib.util, json, pkgutil, sys
import cvmc
imported = []
for info in pkgutil.walk_packages(cvmc.__path__, "cvmc."):
    importlib.import_module(info.name)
    imported.append(info.name)
from cvmc.agent.entrypoints.cli import main
assert callable(main)
print(json.dumps({
    "cvmc": cvmc.__file__,
    "coordinator": importlib.util.find_spec("cvmc.coordinator") is not None,
    "loaded": sorted(m for m in sys.modules if m.startswith("cvmc.")),
    "imported": imported,
}))
"""
    # The unpacked wheel comes first on the path, so `cvmc` is the wheel's package (a regular
    # package: its submodules are looked up in the wheel only, never in src/).
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert Path(seen["cvmc"]).is_relative_to(tmp_path)
    assert seen["coordinator"] is False
    assert not [m for m in seen["loaded"] if m.startswith("cvmc.coordinator")]
    assert "cvmc.agent.service.agent" in seen["imported"]
    assert "cvmc.protocol.schemas" in seen["imported"]
