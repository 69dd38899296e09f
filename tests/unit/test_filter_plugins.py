"""The grid_* Ansible filter plugins: loaded by file path as Ansible does, errors, docs, e2e."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from cvmc.gridmodel import addressing, bandwidth, enrolment

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "filter_plugins"

EXPECTED = {
    "grid_addressing": {
        "grid_split_network",
        "grid_vpn_layout",
        "grid_plan_capacity",
        "grid_overlaps",
        "grid_network_contains",
        "grid_tunnel_address",
        "grid_tunnel_addresses",
        "grid_registry_assign",
        "grid_desktop_id",
        "grid_openvpn_netmask",
        "grid_netmask",
    },
    "grid_bandwidth": {"grid_rate_bits", "grid_rate_tc", "grid_rate_pfsense", "grid_rate_vbox"},
    "grid_classad": {"grid_vm_requirements", "grid_vm_name", "grid_vm_machine_attrs"},
    "grid_memory": {"grid_vm_memory_mb"},
    "grid_enrolment": {"grid_enrol_token"},
    "grid_preflight": {"grid_windows_preflight"},
}


def load_plugin(stem: str) -> ModuleType:
    """Load filter_plugins/<stem>.py by path, as Ansible's plugin loader does."""
    spec = importlib.util.spec_from_file_location(f"test_loaded_{stem}", PLUGINS / f"{stem}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_filters() -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for stem in EXPECTED:
        found.update(load_plugin(stem).FilterModule().filters())
    return found


FILTERS = all_filters()
TWO = [{"name": "vpn-a", "port": 1194}, {"name": "vpn-b", "port": 1195}]


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_filter_names(stem: str) -> None:
    filters = load_plugin(stem).FilterModule().filters()
    assert set(filters) == EXPECTED[stem]
    assert all(callable(f) for f in filters.values())


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_plugin_docs_are_valid_yaml(stem: str) -> None:
    module = load_plugin(stem)
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["name"] in EXPECTED[stem]
    assert doc["short_description"]
    assert doc["description"]
    assert "_input" in doc["options"]
    assert all("type" in opt and "description" in opt for opt in doc["options"].values())
    assert set(doc["positional"].replace(" ", "").split(",")) <= set(doc["options"])
    # every filter of the file is described
    assert all(name in module.DOCUMENTATION for name in EXPECTED[stem])
    examples = yaml.safe_load(module.EXAMPLES)
    assert isinstance(examples, list)
    assert examples
    assert any(name in module.EXAMPLES for name in EXPECTED[stem])
    assert "_value" in yaml.safe_load(module.RETURN)


def test_helper_is_silent_to_ansible_and_finds_src() -> None:
    helper = load_plugin("_gridmodel_path")
    assert helper.FilterModule().filters() == {}
    assert REPO / "src" == helper.SRC_DIR
    assert (helper.SRC_DIR / "cvmc" / "gridmodel" / "addressing.py").is_file()
    assert helper.ensure_cvmc_importable() is False  # cvmc is installed here


@pytest.mark.parametrize(
    ("filter_name", "args", "expected"),
    [
        ("grid_split_network", ("10.64.0.0/16", 2), ["10.64.0.0/17", "10.64.128.0/17"]),
        ("grid_plan_capacity", (addressing.vpn_layout(TWO, "10.64.0.0/24", 2), 2), 124),
        (
            "grid_overlaps",
            ([["a", "10.0.0.0/8"], {"name": "b", "network": "10.64.0.0/16"}],),
            ["a (10.0.0.0/8) overlaps b (10.64.0.0/16)"],
        ),
        ("grid_network_contains", ("10.64.0.0/16", "10.64.64.0/18"), True),
        ("grid_network_contains", ("10.64.0.0/16", "10.65.0.0/18"), False),
        (
            "grid_registry_assign",
            ([{"name": "pc-b", "index": 0}], ["pc-a", "pc-b"]),
            [{"name": "pc-b", "index": 0}, {"name": "pc-a", "index": 1}],
        ),
        ("grid_desktop_id", ("PC-7.campus.edu",), "pc-7"),
        ("grid_openvpn_netmask", ("10.64.0.0/18",), "10.64.0.0 255.255.192.0"),
        ("grid_netmask", ("10.64.0.0/18",), "255.255.192.0"),
        ("grid_rate_bits", ("1.5mbit",), 1_500_000),
        ("grid_rate_tc", ("20mbit",), "20mbit"),
        ("grid_rate_tc", (1_500_000,), "1500kbit"),
        ("grid_rate_pfsense", ("20mbit",), {"bw": 20, "bwscale": "Mb"}),
        ("grid_rate_vbox", (20_000_000,), "20m"),
        ("grid_vm_name", ("its-u11-boinc-20120415",), "its-u11-boinc-20120415"),
        ("grid_vm_memory_mb", (2048, 3072, 2048), 1024),
        ("grid_vm_memory_mb", (200, 8192, 1024, 128), 200),
    ],
)
def test_filter_results(filter_name: str, args: tuple[Any, ...], expected: object) -> None:
    assert FILTERS[filter_name](*args) == expected


def test_layout_and_address_filters_agree_with_the_model() -> None:
    layout = FILTERS["grid_vpn_layout"](TWO, "10.64.0.0/16", 2)
    assert layout == addressing.vpn_layout(TWO, "10.64.0.0/16", 2)
    assert FILTERS["grid_tunnel_address"](layout, 2, 3, 1)["cidr"] == "10.64.128.5/17"
    registry = [{"name": "pc-a", "index": 0}]
    assert FILTERS["grid_tunnel_addresses"](registry, layout, 2) == {
        "pc-a": [addressing.tunnel_address(layout, 2, 0, s) for s in range(2)]
    }
    vm = {"name": "its-u11-boinc-20120415", "os": "LINUX", "arch": "X86_64"}
    assert FILTERS["grid_vm_requirements"](vm).startswith(
        '(TARGET.vm_name == "its-u11-boinc-20120415") && (TARGET.Arch == "X86_64")'
    )
    attrs = FILTERS["grid_vm_machine_attrs"]({**vm, "cpus": 2, "memory_mb": 4096})
    assert attrs == {
        "vm_name": "its-u11-boinc-20120415",
        "OpSys": "LINUX",
        "Arch": "X86_64",
        "Cpus": 2,
        "Memory": 4096,
    }


@pytest.mark.parametrize(
    ("filter_name", "args", "prefix"),
    [
        (
            "grid_split_network",
            ("10.64.0.1/16", 2, "grid_research_network"),
            "grid_research_network: ",
        ),
        (
            "grid_vpn_layout",
            ([{"name": "a", "port": 1, "network": "x"}], "10.64.0.0/16", 2),
            "grid_vpn_instances[a].network: ",
        ),
        ("grid_plan_capacity", ([], 2), "grid_vpn_layout: "),
        ("grid_overlaps", ([["campus", "10.0.0.1/8"]],), "campus: "),
        ("grid_network_contains", ("10.64.0.0/16", "bad", "grid_vpn"), "grid_vpn (inner): "),
        (
            "grid_tunnel_address",
            (addressing.vpn_layout(TWO, "10.64.0.0/16", 2), 2, 0, 5),
            "grid_desktop_registry: ",
        ),
        (
            "grid_tunnel_addresses",
            ([{"name": "a", "index": -1}], [], 2),
            "grid_desktop_registry[a].index: ",
        ),
        (
            "grid_registry_assign",
            ([{"name": "a", "index": 0}, {"name": "b", "index": 0}], []),
            "grid_desktop_registry: ",
        ),
        ("grid_desktop_id", ("", "desktops[0]"), "desktops[0]: "),
        (
            "grid_openvpn_netmask",
            ("10.64.0.0/33", "grid_vpn_instances[a].network"),
            "grid_vpn_instances[a].network: ",
        ),
        ("grid_netmask", ("nope",), "value: "),
        (
            "grid_rate_bits",
            ("20mbitt", "grid_bandwidth_classes.standard.down"),
            "grid_bandwidth_classes.standard.down: unknown unit 'mbitt'",
        ),
        ("grid_rate_tc", ("20", "cap"), "cap: '20' needs a unit"),
        ("grid_rate_pfsense", (0, "cap"), "cap: 0 is not a positive rate"),
        ("grid_rate_vbox", ("1500bit", "cap"), "cap: 1500 bit/s is not a whole number of kbit/s"),
        (
            "grid_vm_requirements",
            ({"name": 'x") || true || ("', "os": "LINUX", "arch": "X86_64"},),
            "grid_vm_types.name: ",
        ),
        (
            "grid_vm_name",
            ("Bad Name", "grid_vm_types[0].name"),
            "grid_vm_types[0].name: 'Bad Name'",
        ),
        (
            "grid_vm_machine_attrs",
            ({"name": "abc", "os": "LINUX", "arch": "X86_64", "cpus": 0, "memory_mb": 1},),
            "grid_vm_types.cpus: ",
        ),
        (
            "grid_vm_memory_mb",
            (0, 4096, 1024, 256, "grid_vm_types[a].memory_mb"),
            "grid_vm_types[a].memory_mb: ",
        ),
    ],
)
def test_bad_input_raises_ansible_filter_error_naming_the_variable(
    filter_name: str, args: tuple[Any, ...], prefix: str
) -> None:
    with pytest.raises(AnsibleFilterError) as info:
        FILTERS[filter_name](*args)
    assert info.value.message.startswith(prefix)
    assert str(info.value).startswith(prefix)


def test_filter_error_message_is_the_model_message_unchanged() -> None:
    with pytest.raises(ValueError, match="unknown unit") as model_error:
        bandwidth.parse_rate("20mbitt", name="grid_bandwidth_classes.standard.down")
    with pytest.raises(AnsibleFilterError) as filter_error:
        FILTERS["grid_rate_bits"]("20mbitt", name="grid_bandwidth_classes.standard.down")
    assert filter_error.value.message == str(model_error.value)


STUB_ANSIBLE_ERRORS = "class AnsibleFilterError(Exception):\n    pass\n"


def test_plugins_fall_back_to_the_checkouts_src(tmp_path: Path) -> None:
    """Without cvmc installed (python -S: no site-packages) the plugin uses filter_plugins/../src.

    A stub ``ansible.errors`` stands in for Ansible, which is not importable there either.
    """
    (tmp_path / "ansible").mkdir()
    (tmp_path / "ansible" / "__init__.py").write_text("")
    (tmp_path / "ansible" / "errors.py").write_text(STUB_ANSIBLE_ERRORS)
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        try:
            import cvmc
        except ImportError:
            pass
        else:
            sys.exit("cvmc is importable without site-packages; cannot test the fallback")
        spec = importlib.util.spec_from_file_location("p", {str(PLUGINS / "grid_bandwidth.py")!r})
        plugin = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(plugin)
        import cvmc
        from ansible.errors import AnsibleFilterError
        filters = plugin.FilterModule().filters()
        print(filters["grid_rate_tc"]("20mbit"))
        print(cvmc.__file__)
        try:
            filters["grid_rate_bits"]("20", "cap")
        except AnsibleFilterError as exc:
            print(exc)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    tc, cvmc_file, error = result.stdout.splitlines()
    assert tc == "20mbit"
    assert Path(cvmc_file).resolve().is_relative_to(REPO / "src")
    assert error.startswith("cap: '20' needs a unit")


def _ansible_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_FILTER_PLUGINS=str(PLUGINS),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        ANSIBLE_NOCOLOR="1",
        # The assertion reads the JSON result format, whatever ansible.cfg prefers.
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
    )
    return env


@pytest.mark.slow
@pytest.mark.parametrize("cvmc_installed", [True, False], ids=["installed", "not-importable"])
def test_ansible_runs_the_filter(tmp_path: Path, cvmc_installed: bool) -> None:
    """Real ansible: `'20mbit' | grid_rate_tc`, with cvmc installed and with it not importable.

    Without it: ``python -S`` skips site-packages' .pth files (the editable install), and
    PYTHONPATH gives back the packages themselves, so Ansible runs but cvmc must come from src/.
    """
    ansible = Path(sys.executable).parent / "ansible"
    command = [str(ansible), "localhost", "-m", "ansible.builtin.debug"]
    command += ["-a", "msg={{ '20mbit' | grid_rate_tc }}"]
    env = _ansible_env(tmp_path)
    if not cvmc_installed:
        purelib = sysconfig.get_paths()["purelib"]
        probe = subprocess.run(
            [sys.executable, "-S", "-c", "import cvmc"],
            env={**env, "PYTHONPATH": purelib},
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            pytest.skip("cvmc is installed into site-packages itself; cannot hide it with -S")
        env["PYTHONPATH"] = purelib
        command = [sys.executable, "-S", *command]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert '"msg": "20mbit"' in result.stdout


ENROL_KEY = "k" * 40


def test_enrol_token_filter_mints_the_same_token_and_raises_ansible_filter_error() -> None:
    mint = load_plugin("grid_enrolment").FilterModule().filters()["grid_enrol_token"]
    assert mint(ENROL_KEY, "chem-lab-01", 2) == enrolment.enrol_token(ENROL_KEY, "chem-lab-01", 2)
    with pytest.raises(AnsibleFilterError, match=r"^grid_coordinator_enrol_key: the enrolment key"):
        mint("short", "chem-lab-01")
