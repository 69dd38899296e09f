"""The Linux desktops' wheelhouse (scripts/wheelhouse.sh linux), built for real.

Real: the script builds the desktop wheel and downloads the pinned dependencies from the
package index; pip then resolves ``cvmc-agent`` from the wheelhouse alone (``--no-index``) for
each Python the Linux desktops run (3.11 on Debian 12 and EL9, 3.12 on Ubuntu 24.04, 3.13 on
Debian 13), and installs it into a fresh venv of the test interpreter, whose ``cvmc`` runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PINS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
    "dependencies"
]

# EL9's glibc is 2.34, Debian 12's 2.36: the tags the wheels in use carry, and older.
MANYLINUX = (
    "manylinux_2_34",
    "manylinux_2_28",
    "manylinux_2_17",
    "manylinux2014",
    "manylinux_2_12",
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wh") / "linux"
    pip = Path(sys.executable).parent / "pip"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/wheelhouse.sh"), "linux", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PIP": str(pip), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "built" in done.stdout
    return out


def test_it_holds_the_desktop_wheel_and_no_coordinator(wheelhouse: Path) -> None:
    names = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert len([n for n in names if n.startswith("cvmc_agent-")]) == 1, names
    assert not [n for n in names if n.startswith("cvmc-")], names
    assert (wheelhouse / ".complete").exists()
    # Linux wheels only: no Windows or macOS build slipped in.
    assert not [n for n in names if "win" in n or "macosx" in n], names


@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13"])
def test_pip_resolves_the_agent_from_it_alone_for_each_python(
    wheelhouse: Path, tmp_path: Path, python: str
) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--dry-run",
            "--ignore-installed",
            "--no-index",
            f"--find-links={wheelhouse}",
            "--only-binary=:all:",
            # What pip on a glibc 2.34+ desktop accepts (it lists every older manylinux tag
            # itself; --platform takes them one by one).
            *(f"--platform={tag}_x86_64" for tag in MANYLINUX),
            "--implementation=cp",
            f"--python-version={python}",
            f"--target={tmp_path / 'target'}",
            f"--report={report}",
            "cvmc-agent",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    installed = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    for pin in PINS:
        name, _, version = pin.partition("==")
        assert installed[name.lower()] == version, (pin, installed)
    assert "cvmc-agent" in installed


def test_a_venv_installs_it_with_no_index_and_cvmc_runs(wheelhouse: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [
            str(venv / "bin/pip"),
            "install",
            "--quiet",
            "--no-index",
            f"--find-links={wheelhouse}",
            "cvmc-agent",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    version = subprocess.run(
        [str(venv / "bin/cvmc"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("cvmc ")
    # No coordinator code reached the desktop's venv.
    assert not list(venv.glob("lib/python*/site-packages/cvmc/coordinator"))
