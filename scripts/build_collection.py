"""Build the Ansible collection ``desktopgrid.grid`` from the repository's own layout.

The checkout keeps its layout (``ansible.cfg`` points at ``library/``, ``module_utils/``,
``doc_fragments/``, ``filter_plugins/`` and ``roles/``). This script assembles a collection
tree from it in a staging directory and lets ``ansible-galaxy collection build`` pack it:

- ``library/*.py`` -> ``plugins/modules/``, ``module_utils/*.py`` -> ``plugins/module_utils/``,
  ``doc_fragments/*.py`` -> ``plugins/doc_fragments/``, ``filter_plugins/*.py`` ->
  ``plugins/filter/``, ``roles/`` and ``playbooks/`` as they are;
- ``src/cvmc/gridmodel`` and ``src/cvmc/ansible`` (what the filters import) are copied under
  ``plugins/plugin_utils/cvmc/``: the collection needs no ``cvmc`` package on the controller;
- only what must change is rewritten: ``extends_documentation_fragment`` names become FQCNs
  (``desktopgrid.grid.pfsense_api``), ``ansible.module_utils.<x>`` imports of the project's own
  module_utils become ``ansible_collections.desktopgrid.grid.plugins.module_utils.<x>``, and
  ``cvmc.`` imports become ``ansible_collections.desktopgrid.grid.plugins.plugin_utils.cvmc.``;
- ``galaxy.yml`` comes from ``collection/galaxy.yml.in`` with the version of ``pyproject.toml``
  (the one home of the version); ``meta/runtime.yml``, the collection's README, CHANGELOG.md
  and ``changelogs/changelog.yaml`` are copied.

Every file is copied at build time, never edited twice: the sources stay the one truth.

usage: python scripts/build_collection.py --output-dir DIR [--staging DIR [--sanity]]

prints the tarball's path. With ``--staging DIR`` the tree is assembled in
``DIR/ansible_collections/desktopgrid/grid`` and kept; ``--sanity`` then runs there the
``ansible-test sanity`` tests that work offline (``SANITY_TESTS``; ``make collection-sanity``).
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "desktopgrid"
NAME = "grid"
FQCN_PREFIX = f"ansible_collections.{NAMESPACE}.{NAME}.plugins"
# The packages of src/cvmc the filter plugins import (stdlib and ansible only).
VENDORED_PACKAGES = ("gridmodel", "ansible")
# The ansible-test sanity tests that run offline. The others (validate-modules, yamllint, pylint,
# pep8, import, ansible-doc, changelog, runtime-metadata) install their requirements into a venv
# that ansible-test bootstraps with a pip script downloaded from ansible's CI file server, which
# this project's machines cannot reach; tests/integration/test_collection.py runs ansible-doc on
# every module itself, and the checkout's `make lint` runs yamllint and ansible-lint.
SANITY_TESTS = (
    "action-plugin-docs",
    "compile",
    "empty-init",
    "ignores",
    "line-endings",
    "no-assert",
    "no-get-exception",
    "no-illegal-filenames",
    "no-smart-quotes",
    "replace-urlopen",
    "shebang",
    "symlinks",
    "use-argspec-type-path",
    "use-compat-six",
)
# ansible-core versions whose ansible-test reads collection/tests/sanity/ignore.txt.
SANITY_IGNORE_VERSIONS = ("2.19", "2.20")


def project_version() -> str:
    """The version of pyproject.toml, the one home of the version."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    if not isinstance(version, str):
        raise SystemExit("pyproject.toml: project.version must be a string")
    return version


def module_utils_names() -> list[str]:
    return sorted(p.stem for p in (ROOT / "module_utils").glob("*.py"))


def fragment_names() -> list[str]:
    return sorted(p.stem for p in (ROOT / "doc_fragments").glob("*.py"))


def rewrite_module(text: str) -> str:
    """A module of library/: FQCN doc fragments, the collection's own module_utils."""
    for util in module_utils_names():
        text = re.sub(
            rf"\bansible\.module_utils\.{util}\b", f"{FQCN_PREFIX}.module_utils.{util}", text
        )

    def fqcn_fragments(match: re.Match[str]) -> str:
        names = [n.strip() for n in match.group(2).split(",") if n.strip()]
        own = set(fragment_names())
        fqcns = [f"{NAMESPACE}.{NAME}.{n}" if n in own else n for n in names]
        return f"{match.group(1)}[{', '.join(fqcns)}]"

    return re.sub(
        r"^(extends_documentation_fragment:\s*)\[([^\]]*)\]",
        fqcn_fragments,
        text,
        flags=re.MULTILINE,
    )


def rewrite_cvmc_imports(text: str) -> str:
    """``from cvmc.x import y`` -> the vendored copy under plugins/plugin_utils."""
    return re.sub(
        r"^(\s*)from cvmc\.", rf"\1from {FQCN_PREFIX}.plugin_utils.cvmc.", text, flags=re.MULTILINE
    )


def copy_py(src_dir: Path, dest_dir: Path, rewrite: Callable[[str], str] | None = None) -> None:
    dest_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(src_dir.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if rewrite is not None:
            text = rewrite(text)
        (dest_dir / path.name).write_text(text, encoding="utf-8")


def filter_names(plugin_file: Path) -> list[str]:
    """The names a filter plugin file's ``FilterModule.filters`` returns (its dict's keys)."""
    tree = ast.parse(plugin_file.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "filters":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Dict):
                    names += [
                        k.value
                        for k in sub.keys
                        if isinstance(k, ast.Constant) and isinstance(k.value, str)
                    ]
    return names


def rewrite_filter_calls(text: str, names: list[str]) -> str:
    """``| grid_plan`` -> ``| desktopgrid.grid.grid_plan``: a collection's roles and playbooks
    reach the collection's filters by FQCN only (short names resolve to ansible.builtin)."""
    pattern = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.sub(rf"(\|\s*)({pattern})\b(?![.\w])", rf"\1{NAMESPACE}.{NAME}.\2", text)


def galaxy_yml(version: str) -> str:
    meta = yaml.safe_load((ROOT / "collection" / "galaxy.yml.in").read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("namespace") != NAMESPACE or meta.get("name") != NAME:
        raise SystemExit(f"collection/galaxy.yml.in must name {NAMESPACE}.{NAME}")
    meta["version"] = version
    dumped: str = yaml.safe_dump(meta, sort_keys=False)
    return (
        "---\n# Generated by scripts/build_collection.py from collection/galaxy.yml.in.\n" + dumped
    )


def assemble(dest: Path) -> None:
    """Lay the collection tree out in ``dest`` (ansible_collections/<ns>/<name>)."""
    if dest.exists():
        shutil.rmtree(dest)
    plugins = dest / "plugins"
    copy_py(ROOT / "library", plugins / "modules", rewrite_module)
    copy_py(ROOT / "module_utils", plugins / "module_utils")
    copy_py(ROOT / "doc_fragments", plugins / "doc_fragments")
    copy_py(ROOT / "filter_plugins", plugins / "filter", rewrite_cvmc_imports)
    vendored = plugins / "plugin_utils" / "cvmc"
    vendored.mkdir(parents=True)
    (plugins / "plugin_utils" / "__init__.py").write_text("", encoding="utf-8")
    shutil.copy2(ROOT / "src" / "cvmc" / "__init__.py", vendored / "__init__.py")
    for package in VENDORED_PACKAGES:
        copy_py(ROOT / "src" / "cvmc" / package, vendored / package, rewrite_cvmc_imports)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".cache")
    shutil.copytree(ROOT / "roles", dest / "roles", ignore=ignore)
    shutil.copytree(ROOT / "playbooks", dest / "playbooks", ignore=ignore)
    # A collection's roles carry no plugins of their own: a role's filter_plugins join the
    # collection's filters.
    for role_plugins in sorted((dest / "roles").glob("*/filter_plugins")):
        copy_py(role_plugins, plugins / "filter", rewrite_cvmc_imports)
        shutil.rmtree(role_plugins)
    names = [n for f in sorted((plugins / "filter").glob("*.py")) for n in filter_names(f)]
    for path in sorted([*(dest / "roles").rglob("*"), *(dest / "playbooks").rglob("*")]):
        if path.is_file() and path.suffix in {".yml", ".yaml", ".j2"}:
            text = path.read_text(encoding="utf-8")
            new = rewrite_filter_calls(text, names)
            if new != text:
                path.write_text(new, encoding="utf-8")
    (dest / "meta").mkdir()
    shutil.copy2(ROOT / "collection" / "runtime.yml", dest / "meta" / "runtime.yml")
    shutil.copy2(ROOT / "collection" / "README.md", dest / "README.md")
    shutil.copy2(ROOT / "CHANGELOG.md", dest / "CHANGELOG.md")
    (dest / "changelogs").mkdir()
    shutil.copy2(ROOT / "changelogs" / "changelog.yaml", dest / "changelogs" / "changelog.yaml")
    shutil.copy2(ROOT / "changelogs" / "config.yaml", dest / "changelogs" / "config.yaml")
    # ansible-test reads the ignore file of the running ansible-core's major.minor (no comments
    # allowed in it). It lists the scripts roles install on managed hosts, which run there with
    # python3: ansible-test's shebang test allows only "#!/usr/bin/env python" outside modules.
    sanity = dest / "tests" / "sanity"
    sanity.mkdir(parents=True)
    for core in SANITY_IGNORE_VERSIONS:
        shutil.copy2(ROOT / "collection/tests/sanity/ignore.txt", sanity / f"ignore-{core}.txt")
    (dest / "galaxy.yml").write_text(galaxy_yml(project_version()), encoding="utf-8")


def check_rewritten(dest: Path) -> None:
    """Stop the build if a file still names the checkout's layout (a form the rewrites miss)."""
    own_utils = "|".join(map(re.escape, module_utils_names())) or "(?!)"
    stale = re.compile(
        rf"^\s*(from cvmc\b|import cvmc\b)|\bansible\.module_utils\.({own_utils})\b", re.MULTILINE
    )
    bad = sorted(
        str(p.relative_to(dest)) for p in dest.rglob("*.py") if stale.search(p.read_text())
    )
    if bad:
        raise SystemExit(f"not rewritten for the collection: {', '.join(bad)}")


def build(output_dir: Path, staging: Path | None) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="collection-") as tmp:
        base = staging if staging is not None else Path(tmp)
        tree = base / "ansible_collections" / NAMESPACE / NAME
        assemble(tree)
        check_rewritten(tree)
        galaxy = [sys.executable, "-m", "ansible.cli.galaxy", "collection", "build", "--force"]
        cmd = [*galaxy, "--output-path", str(output_dir)]
        subprocess.run(cmd, cwd=tree, check=True, stdout=subprocess.DEVNULL)  # noqa: S603
    tarball = output_dir / f"{NAMESPACE}-{NAME}-{project_version()}.tar.gz"
    if not tarball.is_file():
        raise SystemExit(f"ansible-galaxy built no {tarball}")
    return tarball


def sanity(tree: Path) -> int:
    """Run the offline ansible-test sanity tests on an assembled tree; their exit status."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    tests = [arg for name in SANITY_TESTS for arg in ("--test", name)]
    ansible_test = str(Path(sys.executable).parent / "ansible-test")
    cmd = [ansible_test, "sanity", "--local", "--python", python, *tests]
    return subprocess.run(cmd, cwd=tree, check=False).returncode  # noqa: S603


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--staging", type=Path, help="keep the assembled tree under this folder")
    parser.add_argument(
        "--sanity",
        action="store_true",
        help="then run the offline ansible-test sanity tests in the staging tree (needs --staging)",
    )
    args = parser.parse_args(argv)
    staging = args.staging.resolve() if args.staging is not None else None
    if args.sanity and staging is None:
        parser.error("--sanity needs --staging")
    print(build(args.output_dir.resolve(), staging), flush=True)
    if args.sanity and staging is not None:
        return sanity(staging / "ansible_collections" / NAMESPACE / NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
