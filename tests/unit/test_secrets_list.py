"""docs/secrets.md, the roles' argument specs and the example inventory name the same secrets.

kind: real (the real ansible-inventory reads the example inventory) and structural (the roles'
argument specs and the docs are parsed). A secret is a role option marked ``no_log``; each one
is listed in docs/secrets.md, and each ``vault_*`` variable the example inventory wires has a
placeholder in one of its ``vault.yml.example`` files (which Ansible does not read).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml
from ansible_run import ROOT

EXAMPLE = ROOT / "inventories/example"
DOC = (ROOT / "docs/secrets.md").read_text()
_VAULT_REF = re.compile(r"\{\{\s*(vault_[a-z0-9_]+)\s*\}\}")


def no_log_options() -> set[str]:
    names: set[str] = set()
    for spec_file in (ROOT / "roles").glob("*/meta/argument_specs.yml"):
        specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
        for entry in specs.values():
            for name, option in (entry.get("options") or {}).items():
                if option.get("no_log"):
                    names.add(name)
    return names


def wired() -> dict[str, str]:
    """vault variable -> the role variable the example inventory sets from it."""
    refs: dict[str, str] = {}
    for path in (EXAMPLE / "group_vars").rglob("*.yml"):
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            if isinstance(value, str):
                for ref in _VAULT_REF.findall(value):
                    refs[ref] = key
    return refs


def placeholders() -> set[str]:
    names: set[str] = set()
    for path in (EXAMPLE / "group_vars").rglob("vault.yml.example"):
        names |= set(yaml.safe_load(path.read_text()))
    return names


def test_every_no_log_option_is_listed_in_the_doc() -> None:
    options = no_log_options()
    assert len(options) >= 10, options
    missing = sorted(o for o in options if f"`{o}`" not in DOC)
    assert missing == [], f"docs/secrets.md does not list {missing}"


def test_every_wired_vault_variable_has_a_placeholder_and_a_doc_row() -> None:
    refs = wired()
    assert "vault_htcondor_pool_signing_key" in refs
    assert set(refs) == placeholders()
    for vault_name, role_var in refs.items():
        assert f"`{vault_name}`" in DOC, vault_name
        assert f"`{role_var}`" in DOC, role_var


def test_ansible_reads_the_wiring_and_not_the_placeholders(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(EXAMPLE), "--list"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_NOCOLOR": "1"},
        cwd=ROOT / "inventories",
    )
    hostvars = json.loads(result.stdout)["_meta"]["hostvars"]
    cm = hostvars["cm.grid.example.edu"]
    assert cm["htcondor_pool_signing_key"] == "{{ vault_htcondor_pool_signing_key }}"
    # Only the groups that need a secret get it; no host sees a placeholder value.
    assert "htcondor_pool_signing_key" not in hostvars["chem-lab-01.ad.example.edu"]
    assert all(not any(k.startswith("vault_") for k in hv) for hv in hostvars.values())
