"""Which of cvmc's packages may import which (docs/design.md, Boundaries).

The coordinator (one server) and the agent (every desktop) both depend on the wire contract,
``cvmc.protocol``, and never on each other; the contract and the grid model stand on the
standard library (the model: and on nothing else of cvmc). The desktop wheel leaves
``cvmc.coordinator`` out, so an agent import of it would break every desktop.

Each module's syntax tree is read, not imported: every ``import``, ``from ... import``
(relative ones resolved), and ``importlib.import_module``/``__import__`` call with a literal
name, at any depth (inside functions and ``TYPE_CHECKING`` blocks too).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, *, is_package: bool = False) -> Iterator[str]:
    """The full dotted names ``source`` (the module ``module``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module or ""
            yield parent
            # `from cvmc import agent` imports the package cvmc.agent.
            yield from (f"{parent}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def modules(package: str) -> list[Path]:
    found = sorted((SRC / package.replace(".", "/")).rglob("*.py"))
    assert found, f"no modules under {package}"
    return found


def offenders(package: str, forbidden: Callable[[str], bool]) -> list[str]:
    """``module: imported name`` for each import in ``package`` that ``forbidden`` refuses."""
    out = []
    for path in modules(package):
        name = module_name(path)
        source = path.read_text(encoding="utf-8")
        for imported in imported_names(source, name, is_package=path.name == "__init__.py"):
            if forbidden(imported):
                out.append(f"{path.relative_to(SRC)}: {imported}")
    return sorted(set(out))


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def not_stdlib_or(*allowed: str) -> Callable[[str], bool]:
    def forbidden(name: str) -> bool:
        if within(name, *allowed):
            return False
        if name == "cvmc":  # `from cvmc import protocol`: the names are checked one by one
            return False
        return name.partition(".")[0] not in sys.stdlib_module_names

    return forbidden


def assert_no_offenders(package: str, forbidden: Callable[[str], bool], rule: str) -> None:
    bad = offenders(package, forbidden)
    assert not bad, f"{rule}; these imports break it:\n" + "\n".join(bad)


def test_the_coordinator_imports_nothing_of_the_agent() -> None:
    assert_no_offenders(
        "cvmc.coordinator",
        lambda name: within(name, "cvmc.agent"),
        "the coordinator imports nothing of the agent (the contract is cvmc.protocol)",
    )


def test_the_agent_imports_nothing_of_the_coordinator() -> None:
    assert_no_offenders(
        "cvmc.agent",
        lambda name: within(name, "cvmc.coordinator"),
        "the agent imports nothing of the coordinator (the desktop wheel has no cvmc.coordinator)",
    )


def test_the_protocol_stands_on_the_grid_model_and_the_standard_library_only() -> None:
    assert_no_offenders(
        "cvmc.protocol",
        not_stdlib_or("cvmc.protocol", "cvmc.gridmodel"),
        "cvmc.protocol imports only itself, cvmc.gridmodel and the standard library",
    )


def test_the_grid_model_imports_no_other_part_of_cvmc() -> None:
    assert_no_offenders(
        "cvmc.gridmodel",
        lambda name: within(name, "cvmc.agent", "cvmc.coordinator", "cvmc.protocol"),
        "cvmc.gridmodel imports neither the agent, the coordinator nor the protocol",
    )


def test_the_grid_model_stands_on_the_standard_library_only() -> None:
    assert_no_offenders(
        "cvmc.gridmodel",
        not_stdlib_or("cvmc.gridmodel"),
        "cvmc.gridmodel imports only itself and the standard library",
    )


# The walker itself: a boundary test that sees no import passes for nothing.


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import cvmc.agent.domain.engine", "cvmc.agent.domain.engine"),
        ("from cvmc.agent.domain import engine", "cvmc.agent.domain.engine"),
        ("from cvmc import agent", "cvmc.agent"),
        ("from ...agent import compose", "cvmc.agent.compose"),
        ("from ... import agent", "cvmc.agent"),
        ("def f():\n    from cvmc.agent import ports", "cvmc.agent.ports"),
        ("if TYPE_CHECKING:\n    import cvmc.agent", "cvmc.agent"),
        ("importlib.import_module('cvmc.agent.cli')", "cvmc.agent.cli"),
        ("__import__('cvmc.agent')", "cvmc.agent"),
    ],
)
def test_the_walker_sees_every_form_of_import(source: str, expected: str) -> None:
    names = set(imported_names(source, "cvmc.coordinator.domain.auth"))
    assert expected in names
    assert within(expected, "cvmc.agent")


def test_the_walker_resolves_relative_imports_of_a_package() -> None:
    names = set(imported_names("from . import leases", "cvmc.protocol", is_package=True))
    assert "cvmc.protocol.leases" in names


def test_an_offending_module_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "cvmc" / "coordinator"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("from cvmc.agent.domain.slots import Slot\nimport json\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert offenders("cvmc.coordinator", lambda name: within(name, "cvmc.agent")) == [
        "cvmc/coordinator/bad.py: cvmc.agent.domain.slots",
        "cvmc/coordinator/bad.py: cvmc.agent.domain.slots.Slot",
    ]
    assert offenders("cvmc.coordinator", not_stdlib_or("cvmc.coordinator")) == [
        "cvmc/coordinator/bad.py: cvmc.agent.domain.slots",
        "cvmc/coordinator/bad.py: cvmc.agent.domain.slots.Slot",
    ]
