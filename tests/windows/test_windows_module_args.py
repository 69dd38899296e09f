"""Contract: every Windows module task uses only options the installed collection documents.

ansible-lint's ``args`` rule skips modules implemented in PowerShell (its source says so:
"ps1 modules cannot be executed on POSIX platforms", ansible-lint issue #3200), so it does NOT
check ansible.windows / community.windows options. This test does that instead: it reads each
module's documented argument spec with ``ansible-doc --json`` (the installed collections of the
venv's ``ansible`` package) and checks every task's option names (and aliases), required
options, literal choices and literal types, and the suboptions of list/dict options such as
``win_scheduled_task``'s ``triggers`` and ``actions``. A mutated copy proves it catches errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = ("ansible.windows.", "community.windows.")
FILES = sorted(
    [
        *ROOT.glob("roles/windows_desktop/tasks/*.yml"),
        *ROOT.glob("roles/windows_desktop/handlers/*.yml"),
        ROOT / "playbooks/desktops.yml",
        ROOT / "playbooks/expand_pool.yml",
        ROOT / "playbooks/remove_desktop.yml",
        *ROOT.glob("molecule/windows/*.yml"),
    ]
)
TASK_LISTS = ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always")
TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "list": (list,),
    "dict": (dict,),
    "str": (str,),
    "path": (str,),
}


def tasks_in(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from tasks_in(item)
    elif isinstance(node, dict):
        if any(str(key).startswith(PREFIXES) for key in node):
            yield node
        for key in TASK_LISTS:
            if key in node:
                yield from tasks_in(node[key])


def windows_tasks(files: list[Path]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in files:
        for task in tasks_in(yaml.safe_load(path.read_text())):
            module = next(key for key in task if str(key).startswith(PREFIXES))
            args = task[module]
            assert isinstance(args, dict), f"{path.name}: {module} takes free-form arguments"
            found.append((f"{path.relative_to(path.parents[2])}: {task.get('name')}", module, args))
    return found


def module_docs(modules: set[str]) -> dict[str, Any]:
    ansible_doc = str(Path(sys.executable).parent / "ansible-doc")
    out = subprocess.run(
        [ansible_doc, "--json", "-t", "module", *sorted(modules)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    docs: dict[str, Any] = json.loads(out.stdout)
    return docs


def is_template(value: object) -> bool:
    return isinstance(value, str) and "{{" in value


def check_value(where: str, key: str, value: object, spec: Mapping[str, Any]) -> Iterator[str]:
    """A literal value against its option's documented choices and type."""
    choices = spec.get("choices")
    if choices is not None and not isinstance(value, list | dict) and value not in choices:
        # Some options take a comma-separated list of choices (win_acl's inherit).
        parts = [part.strip() for part in str(value).split(",")]
        if len(parts) == 1 or not all(part in choices for part in parts):
            yield f"{where}: {key}={value!r} is not one of {choices}"
    kind = str(spec.get("type", "str"))
    wanted = TYPES.get(kind)
    # Ansible converts numbers to str; a list or dict where a str is wanted is wrong.
    converted = kind in ("str", "path") and isinstance(value, int | float)
    if wanted and not isinstance(value, wanted) and not converted:
        yield f"{where}: {key} is {type(value).__name__}, documented as {kind}"


def check_options(where: str, args: Mapping[str, Any], options: Mapping[str, Any]) -> Iterator[str]:
    names: dict[str, str] = {}
    for name, spec in options.items():
        names[name] = name
        for alias in spec.get("aliases", []) or []:
            names[alias] = name
    for key, value in args.items():
        if key not in names:
            yield f"{where}: unknown option {key!r}"
            continue
        spec = options[names[key]]
        if is_template(value):
            continue
        yield from check_value(where, key, value, spec)
        sub = spec.get("suboptions")
        items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        for i, item in enumerate(items):
            if sub and isinstance(item, dict):
                label = f"{where}.{key}[{i}]" if isinstance(value, list) else f"{where}.{key}"
                yield from check_options(label, item, sub)
    for name, spec in options.items():
        if spec.get("required") and not ({name, *(spec.get("aliases") or [])} & set(args)):
            yield f"{where}: required option {name!r} missing"


def problems(files: list[Path]) -> list[str]:
    found = windows_tasks(files)
    docs = module_docs({module for _, module, _ in found})
    out: list[str] = []
    for where, module, args in found:
        assert module in docs, f"{module} is not installed (ansible-doc found no documentation)"
        options = docs[module]["doc"].get("options", {})
        out.extend(check_options(f"{where} ({module})", args, options))
    return out


@pytest.mark.slow
def test_every_windows_module_option_is_documented() -> None:
    found = windows_tasks(FILES)
    assert len(found) > 30  # the role really is checked, not an empty glob
    assert problems(FILES) == []


@pytest.mark.slow
def test_a_wrong_option_or_choice_is_caught(tmp_path: Path) -> None:
    source = ROOT / "roles/windows_desktop/tasks/schedule.yml"
    text = source.read_text()
    assert "    logon_type: password\n" in text
    mutated = tmp_path / "roles/windows_desktop/tasks/schedule.yml"
    mutated.parent.mkdir(parents=True)
    mutated.write_text(
        text.replace(
            "    logon_type: password\n", "    logon_type: passwd\n    run_hidden: true\n", 1
        ).replace("      - type: idle\n", "      - type: idle\n        idle_minutes: 10\n", 1)
    )
    found = problems([mutated])
    assert any("logon_type='passwd' is not one of" in p for p in found), found
    assert any("unknown option 'run_hidden'" in p for p in found), found
    assert any("triggers[1]: unknown option 'idle_minutes'" in p for p in found), found
