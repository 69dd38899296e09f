"""bench/pool_scale.py's pure helpers: the slot ads it advertises and the startd it configures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import classad2

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("pool_scale", ROOT / "bench" / "pool_scale.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("pool_scale", module)
    spec.loader.exec_module(module)
    return module


bench = _bench()
KINDS = [
    bench.SlotType("its-u11-boinc-20120415", 1, 512),
    bench.SlotType("campus-el9-2c-20261201", 2, 4096),
    bench.SlotType("campus-u24-4c-20261201", 4, 8192),
]
TEMPLATE_TEXT = """\
MyType = "Machine"
Name = "slot1@scale-vm"
Machine = "scale-vm"
MyAddress = "<10.89.70.20:9618?alias=scale-vm&sock=startd_1_a>"
Activity = "Benchmarking"
State = "Unclaimed"
Cpus = 2
TotalCpus = 2.0
Memory = 23849
vm_name = "its-u11-boinc-20120415"
Start = (TARGET.vm_name =?= undefined) || (TARGET.vm_name =?= MY.vm_name)
LastHeardFrom = 1796459568
AuthenticatedIdentity = "research-vm@scale-cm"
"""


def test_parse_long_reads_attributes_and_values() -> None:
    ad = bench.parse_long(TEMPLATE_TEXT)
    assert ad["Name"] == '"slot1@scale-vm"'
    assert ad["Start"] == "(TARGET.vm_name =?= undefined) || (TARGET.vm_name =?= MY.vm_name)"
    assert len(ad) == 13


def test_slot_ads_are_distinct_vms_of_each_type_round_robin() -> None:
    template = bench.parse_long(TEMPLATE_TEXT)
    text = bench.slot_ads(template, "scale-vm", KINDS, 10, 4)
    ads = list(classad2.parseAds(text, classad2.ParserType.Old))
    assert [ad["Name"] for ad in ads] == [f"slot1@{bench.vm_host(i)}" for i in range(10, 14)]
    assert [ad["vm_name"] for ad in ads] == [KINDS[i % 3].name for i in range(10, 14)]
    first = ads[0]
    kind = KINDS[10 % 3]
    assert (first["Cpus"], first["TotalCpus"], first["Memory"]) == (
        kind.cpus,
        kind.cpus,
        kind.memory_mb,
    )
    assert first["Machine"] == bench.vm_host(10)
    assert "alias=vm00010.research.scale" in first["MyAddress"]
    assert first["Activity"] == "Idle"
    assert "LastHeardFrom" not in first
    assert "AuthenticatedIdentity" not in first


def test_startd_config_gives_each_slot_type_its_vm_name_and_size() -> None:
    text = bench.startd_config(KINDS, 10)
    lines = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    assert [lines[f"NUM_SLOTS_TYPE_{n}"] for n in (1, 2, 3)] == ["4", "3", "3"]
    assert lines["SLOT_TYPE_2"] == "cpus=2, memory=4096"
    assert lines["SLOT_TYPE_3_PARTITIONABLE"] == "TRUE"
    for n, kind in enumerate(KINDS, start=1):
        slot = classad2.ClassAd({"SlotTypeID": n})
        slot["vm_name"] = classad2.ExprTree(lines["vm_name"])
        assert slot.eval("vm_name") == kind.name
    assert int(lines["NUM_CPUS"]) >= sum(k.cpus * 4 for k in KINDS)


def test_submit_description_names_the_vm_type_as_the_seed_does() -> None:
    text = bench.submit_description(KINDS[1], 7)
    assert '+vm_name = "campus-el9-2c-20261201"' in text
    assert 'requirements = (TARGET.vm_name == "campus-el9-2c-20261201")' in text
    assert text.endswith("queue 7\n")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert bench.percentile(values, 0.5) == 10.0
    assert bench.percentile(values, 0.95) == 19.0
    assert bench.percentile([3.0], 0.95) == 3.0
