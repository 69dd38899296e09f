"""The grid_* Ansible filter plugins: loaded by file path as Ansible does, errors, docs, e2e."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from cvmc.gridmodel import addressing, bandwidth, enrolment, plan

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "filter_plugins"

EXPECTED = {
    "grid_addressing": {
        "grid_split_network",
        "grid_overlaps",
        "grid_network_contains",
        "grid_registry_assign",
        "grid_desktop_id",
        "grid_openvpn_netmask",
        "grid_netmask",
    },
    "grid_bandwidth": {"grid_rate_bits", "grid_rate_tc", "grid_rate_pfsense", "grid_rate_vbox"},
    "grid_classad": {"grid_vm_requirements", "grid_vm_name", "grid_vm_machine_attrs"},
    "grid_memory": {"grid_vm_memory_mb"},
    "grid_enrolment": {"grid_enrol_token"},
    "grid_preflight": {"grid_windows_preflight", "grid_linux_preflight"},
    "grid_plan": {"grid_plan", "grid_plan_identities"},
    "grid_vpn": {
        "grid_vpn_client_config",
        "grid_identity_classes",
        "grid_tc_minor",
        "grid_seed_user_data",
        "grid_seed_meta_data",
    },
    "grid_model": {"grid_model_problems"},
    "grid_cache": {"grid_cache_settings"},
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


@pytest.mark.parametrize(
    ("filter_name", "args", "expected"),
    [
        ("grid_split_network", ("10.64.0.0/16", 2), ["10.64.0.0/17", "10.64.128.0/17"]),
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
        (
            "grid_cache_settings",
            ({"address": "", "port": 3128, "domains": []},),
            {
                "enabled": False,
                "address": "",
                "port": 3128,
                "domains": [],
                "proxy_url": "",
                "environment": {},
            },
        ),
    ],
)
def test_filter_results(filter_name: str, args: tuple[Any, ...], expected: object) -> None:
    assert FILTERS[filter_name](*args) == expected


PLAN_MODEL = {
    "name": "test-grid",
    "research_network": "10.64.0.0/16",
    "vpn_instances": TWO,
    "max_vms_per_desktop": 2,
    "bandwidth_classes": [
        {"name": "standard", "down": "20mbit", "up": "10mbit"},
        {"name": "bulk", "down": "100mbit", "up": "50mbit"},
    ],
    "bandwidth_default_class": "standard",
    "vm_types": [
        {"name": "its-u11-boinc-20120415", "image": "a.qcow2", "cpus": 1, "memory_mb": 512},
        {
            "name": "its-el9-htc-20261101",
            "image": "b.qcow2",
            "cpus": 2,
            "memory_mb": 2048,
            "bandwidth_class": "bulk",
        },
    ],
    "vpn_pki_dir": "/srv/pki",
    "vpn_pki_host": "",
}


def test_plan_filters_are_the_pure_plan() -> None:
    grid_plan = FILTERS["grid_plan"](PLAN_MODEL, ["gw1"])
    assert grid_plan == plan.grid_plan(PLAN_MODEL, vpn_gateways=["gw1"])
    assert grid_plan["layout"] == addressing.vpn_layout(TWO, "10.64.0.0/16", 2)
    assert grid_plan["vm_classes"] == {
        "its-u11-boinc-20120415": "standard",
        "its-el9-htc-20261101": "bulk",
    }
    assert grid_plan["pki"]["host"] == "gw1"
    registry = [{"name": "pc-a", "index": 0}, {"name": "PC-B.campus.edu", "index": 1}]
    mine = FILTERS["grid_plan_identities"](grid_plan, registry, "pc-b.campus.edu")
    assert [(i["cn"], i["cert"]) for i in mine] == [
        ("pc-b-vm0", "/srv/pki/clients/issued/pc-b-vm0.crt"),
        ("pc-b-vm1", "/srv/pki/clients/issued/pc-b-vm1.crt"),
    ]
    assert mine[0]["address"] == addressing.tunnel_address(grid_plan["layout"], 2, 1, 0)["address"]


def test_classad_filters_agree_with_the_model() -> None:
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
            "grid_plan",
            ({**PLAN_MODEL, "vpn_instances": [{"name": "a", "port": 1, "network": "x"}]},),
            "grid_vpn_instances[a].network: ",
        ),
        ("grid_plan", ({**PLAN_MODEL, "vpn_pki_dir": "pki"},), "grid_vpn_pki_dir: 'pki'"),
        (
            "grid_plan",
            ({**PLAN_MODEL, "bandwidth_default_class": "gold"},),
            "grid_bandwidth_default_class: 'gold'",
        ),
        (
            "grid_identity_classes",
            ([{"cn": "a-vm0", "desktop": "a"}], {"a": "gold"}, plan.grid_plan(PLAN_MODEL)),
            "grid_desktop_classes[a]: 'gold' is no class",
        ),
        ("grid_overlaps", ([["campus", "10.0.0.1/8"]],), "campus: "),
        ("grid_network_contains", ("10.64.0.0/16", "bad", "grid_vpn"), "grid_vpn (inner): "),
        (
            "grid_plan_identities",
            (plan.grid_plan(PLAN_MODEL), [{"name": "a", "index": -1}]),
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
        ("grid_cache_settings", ({"address": "10.1.2.3"},), "grid_cache.domains: "),
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
def test_ansible_runs_the_filters_with_plain_imports(tmp_path: Path) -> None:
    """Real ansible loads the plugins, which import cvmc plainly (the venv installs it)."""
    ansible = Path(sys.executable).parent / "ansible"
    model = json.dumps(PLAN_MODEL)
    command = [str(ansible), "localhost", "-m", "ansible.builtin.debug"]
    command += ["-a", "msg={{ ['20mbit' | grid_rate_tc, (" + model + " | grid_plan).capacity] }}"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=_ansible_env(tmp_path),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The JSON result format: "localhost | SUCCESS => {...}".
    host, _, body = result.stdout.partition(" => ")
    assert host.strip() == "localhost | SUCCESS", result.stdout
    assert json.loads(body)["msg"] == ["20mbit", plan.grid_plan(PLAN_MODEL)["capacity"]]


def test_no_plugin_edits_sys_path_or_climbs_out_of_its_folder() -> None:
    plugins = [*PLUGINS.glob("*.py"), *REPO.glob("roles/*/filter_plugins/*.py")]
    assert plugins
    for path in plugins:
        text = path.read_text()
        assert "sys.path" not in text, path
        assert "parents[" not in text, path
        assert "from cvmc." in text, path


ENROL_KEY = "k" * 40


def test_enrol_token_filter_mints_the_same_token_and_raises_ansible_filter_error() -> None:
    mint = load_plugin("grid_enrolment").FilterModule().filters()["grid_enrol_token"]
    before = int(time.time())
    token = mint(ENROL_KEY, "chem-lab-01", 2, ttl_s=3600)
    claims = enrolment.read_enrol_token(ENROL_KEY, token, "chem-lab-01")
    assert claims.generation == 2
    assert before <= claims.issued_at <= int(time.time())
    assert token == enrolment.enrol_token(
        ENROL_KEY, "chem-lab-01", 2, issued_at=claims.issued_at, ttl_s=3600
    )
    # A token with at least half its lifetime left is kept (a second converge changes
    # nothing); one for another generation, or issued before the watermark, is replaced.
    assert mint(ENROL_KEY, "chem-lab-01", 2, ttl_s=3600, reuse=token + "\n") == token
    assert mint(ENROL_KEY, "chem-lab-01", 3, ttl_s=3600, reuse=token).split(".")[1] == "3"
    earlier = enrolment.enrol_token(ENROL_KEY, "chem-lab-01", 2, issued_at=before - 10, ttl_s=3600)
    assert mint(ENROL_KEY, "chem-lab-01", 2, ttl_s=3600, reuse=earlier) == earlier
    fresh = mint(ENROL_KEY, "chem-lab-01", 2, ttl_s=3600, reuse=earlier, not_before=before - 5)
    assert enrolment.read_enrol_token(ENROL_KEY, fresh, "chem-lab-01").issued_at >= before
    old = enrolment.enrol_token(ENROL_KEY, "chem-lab-01", 2, issued_at=before - 1801, ttl_s=3600)
    assert mint(ENROL_KEY, "chem-lab-01", 2, ttl_s=3600, reuse=old) != old
    with pytest.raises(AnsibleFilterError, match=r"^grid_coordinator_enrol_key: the enrolment key"):
        mint("short", "chem-lab-01")
