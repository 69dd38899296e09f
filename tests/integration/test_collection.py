"""The collection ``desktopgrid.grid``, built, installed and used outside the checkout.

kind: real. ``scripts/build_collection.py`` builds the tarball with ``ansible-galaxy collection
build``; ``ansible-galaxy collection install`` installs it into a temporary collections path;
then, from a temporary folder with no ``ansible.cfg`` and an environment with no ``ANSIBLE_*``
variable, ``ansible-doc`` documents every module and ``ansible-playbook
desktopgrid.grid.validate`` validates a copy of the example inventory, and stops a bad one with
the same message as the checkout's ``playbooks/validate.yml``.

The clean interpreter: a venv made with ``python -m venv --without-pip`` (under a second, no
download) whose only addition is a ``.pth`` naming the project venv's site-packages. It has
ansible-core and the collections of the pinned ``ansible`` package from requirements.txt, and
no repository path: the ``.pth`` files of that site-packages, among them the editable install
of ``cvmc``, are not processed, so ``import cvmc`` fails there (checked below) and the filters
can only use the collection's own copy of ``cvmc.gridmodel``. Installing ansible-core from PyPI
into a fresh venv would prove no more about the collection and costs a download each CI run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FQCN = "desktopgrid.grid"
MODULES = sorted(p.stem for p in (ROOT / "library").glob("*.py"))

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Installed:
    python: Path
    env: dict[str, str]
    cwd: Path
    tarball: Path
    collection: Path


def _run(
    args: list[str], env: dict[str, str] | None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def _clean_python(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        None,
        where,
    ).stdout.strip()
    Path(purelib, "project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("collection")
    out = base / "dist"
    built = _run(
        [sys.executable, str(ROOT / "scripts/build_collection.py"), "--output-dir", str(out)],
        None,
        ROOT,
    )
    assert built.returncode == 0, built.stderr
    tarball = Path(built.stdout.strip())
    python = _clean_python(base / "venv")
    cwd = base / "site"
    cwd.mkdir()
    (base / "home").mkdir()
    collections = base / "collections"
    env = {
        "HOME": str(base / "home"),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_NOCOLOR": "1",
    }
    # --no-deps: the collections it depends on come with the pinned ansible package.
    result = _run(
        [
            str(python),
            "-m",
            "ansible.cli.galaxy",
            "collection",
            "install",
            "--no-deps",
            "-p",
            str(collections),
            str(tarball),
        ],
        env,
        cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Installed(
        python, env, cwd, tarball, collections / "ansible_collections/desktopgrid/grid"
    )


def test_the_clean_interpreter_has_ansible_and_no_cvmc(installed: Installed) -> None:
    probe = "import ansible, importlib.util; print(importlib.util.find_spec('cvmc'))"
    result = _run([str(installed.python), "-c", probe], installed.env, installed.cwd)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
    assert not (installed.cwd / "ansible.cfg").exists()
    assert not any(
        k.startswith("ANSIBLE_") and k not in {"ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_NOCOLOR"}
        for k in installed.env
    )


def test_the_tarball_holds_a_collection_of_the_project_version(installed: Installed) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with tarfile.open(installed.tarball) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    assert manifest["collection_info"]["version"] == version
    assert manifest["collection_info"]["namespace"] == "desktopgrid"
    assert {f"plugins/modules/{m}.py" for m in MODULES} <= names
    expected = {
        "playbooks/validate.yml",
        "meta/runtime.yml",
        "CHANGELOG.md",
        "changelogs/changelog.yaml",
    }
    assert expected <= names
    # No file of the collection imports the project's package or its own module_utils by
    # their checkout names: all were rewritten to the collection's.
    for py in installed.collection.rglob("*.py"):
        text = py.read_text()
        assert "from cvmc." not in text, py
        assert "import cvmc" not in text, py
        assert "ansible.module_utils.pfsense_rest" not in text, py


def test_ansible_doc_documents_every_module(installed: Installed) -> None:
    names = [f"{FQCN}.{m}" for m in MODULES]
    result = _run(
        [str(installed.python), "-m", "ansible.cli.doc", "--json", *names],
        installed.env,
        installed.cwd,
    )
    assert result.returncode == 0, result.stderr
    docs = json.loads(result.stdout)
    assert sorted(docs) == names
    for name, doc in docs.items():
        assert doc["doc"]["options"], name
    # The shared doc fragment is found: the pfsense modules carry its options.
    assert "api_key" in docs[f"{FQCN}.pfsense_info"]["doc"]["options"]


def test_ansible_doc_lists_the_filters(installed: Installed) -> None:
    result = _run(
        [str(installed.python), "-m", "ansible.cli.doc", "-t", "filter", "--list", "--json", FQCN],
        installed.env,
        installed.cwd,
    )
    assert result.returncode == 0, result.stderr
    assert f"{FQCN}.grid_model_problems" in json.loads(result.stdout)


def _inventory(installed: Installed, name: str) -> Path:
    inventory = installed.cwd / name
    shutil.copytree(ROOT / "inventories/example", inventory)
    return inventory


def _validate(installed: Installed, inventory: Path) -> subprocess.CompletedProcess[str]:
    return _run(
        [
            str(installed.python),
            "-m",
            "ansible.cli.playbook",
            "-i",
            str(inventory),
            f"{FQCN}.validate",
        ],
        installed.env,
        installed.cwd,
    )


def test_validate_playbook_passes_on_the_example_inventory(installed: Installed) -> None:
    result = _validate(installed, _inventory(installed, "example"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "desktopgrid.grid.grid : Check the grid model" in result.stdout
    assert "failed=0" in result.stdout


def test_every_playbook_of_the_collection_passes_a_syntax_check(installed: Installed) -> None:
    names = [f"{FQCN}.{p.stem}" for p in sorted((ROOT / "playbooks").glob("*.yml"))]
    assert f"{FQCN}.site" in names
    result = _run(
        [str(installed.python), "-m", "ansible.cli.playbook", "--syntax-check",
         "-i", str(_inventory(installed, "syntax")), *names],
        installed.env,
        installed.cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for name in names:
        assert f"/playbooks/{name.rsplit('.', 1)[1]}.yml" in result.stdout, name


def _gate_message(output: str) -> str:
    """The gate's problem, from the failed task's error line: ``grid_research_network (...)...``."""
    match = re.search(r"Action failed: \['(grid_research_network [^']*)'\]", output)
    assert match, output
    return match.group(1)


def test_a_bad_inventory_value_fails_with_the_gates_message(installed: Installed) -> None:
    inventory = _inventory(installed, "bad")
    model = inventory / "group_vars/all/grid.yml"
    # A research network inside the campus LAN (10.0.0.0/10): the gate refuses the overlap.
    model.write_text(
        model.read_text().replace(
            "grid_research_network: 10.64.0.0/16", "grid_research_network: 10.1.0.0/16"
        )
    )
    result = _validate(installed, inventory)
    assert result.returncode != 0, result.stdout
    from_collection = _gate_message(result.stdout)
    # The same inventory through the checkout's playbook gives the same message.
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    checkout = _run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            str(ROOT / "playbooks/validate.yml"),
        ],
        env,
        ROOT,
    )
    assert checkout.returncode != 0, checkout.stdout
    assert from_collection == _gate_message(checkout.stdout)
    assert "10.1.0.0/16" in from_collection


def test_ansible_test_sanity_passes_on_the_built_collection(tmp_path: Path) -> None:
    """The offline ansible-test sanity tests (scripts/build_collection.py SANITY_TESTS)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = _run(
        [sys.executable, str(ROOT / "scripts/build_collection.py"), "--output-dir",
         str(tmp_path / "dist"), "--staging", str(tmp_path), "--sanity"],
        env,
        ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert 'Running sanity test "no-assert"' in output
    assert "All targets skipped" not in output, output
