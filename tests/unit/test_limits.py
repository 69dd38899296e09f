"""The grid model's scalar settings: strict types, documented ranges, named in every message."""

from __future__ import annotations

import re

import pytest
from lab_model import ROOT

from cvmc.gridmodel import catalogue, limits


@pytest.mark.parametrize(
    ("variable", "low", "high"),
    [
        ("grid_max_vms_per_desktop", 1, 64),
        ("grid_planned_desktops", 1, None),
        ("grid_host_memory_reserve_mb", 0, None),
        ("grid_desktop_min_memory_mb", 1, None),
        ("grid_policy.min_battery_percent", 0, 100),
    ],
)
def test_every_setting_has_its_range(variable: str, low: int, high: int | None) -> None:
    bounds = limits.RANGES[variable]
    assert (bounds.minimum, bounds.maximum) == (low, high)
    assert bounds.why
    assert limits.setting(low, variable) == low
    with pytest.raises(ValueError, match=f"^{re.escape(variable)}: {low - 1} is out of range"):
        limits.setting(low - 1, variable)
    if high is not None:
        assert limits.setting(high, variable) == high
        with pytest.raises(ValueError, match=rf"from {low} to {high}$"):
            limits.setting(high + 1, variable)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (True, "True is true or false, not a whole number (YAML reads an unquoted yes"),
        (False, "False is true or false, not a whole number"),
        ("2", "'2' is not a whole number"),
        (2.0, "2.0 is not a whole number"),
        (None, "None is not a whole number"),
        ([2], "[2] is not a whole number"),
    ],
)
def test_a_number_is_an_int_and_never_a_bool(value: object, words: str) -> None:
    with pytest.raises(ValueError, match=r"^grid_max_vms_per_desktop: ") as info:
        limits.setting(value, "grid_max_vms_per_desktop")
    assert words in str(info.value)


def test_a_label_other_than_the_variable() -> None:
    with pytest.raises(ValueError, match=r"^grid_policy\.min_battery_percent: 150 is out of range"):
        limits.setting(150, "grid_policy.min_battery_percent")
    with pytest.raises(ValueError, match=r"^p\.battery: 150 "):
        limits.setting(150, "grid_policy.min_battery_percent", name="p.battery")


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, "False"])
def test_a_flag_is_true_or_false_only(value: object) -> None:
    with pytest.raises(ValueError, match=r"^f: .* is not true or false"):
        limits.flag(value, name="f")
    assert limits.flag(True, name="f") is True
    assert limits.flag(False, name="f") is False


@pytest.mark.parametrize("name", ["lab-grid", "g", "example.grid_2", "a" * 63])
def test_grid_names(name: str) -> None:
    assert limits.grid_name(name) == name


@pytest.mark.parametrize("name", ["", "-lab", "lab grid", 'lab"grid', "a" * 64, 5, None])
def test_bad_grid_names(name: object) -> None:
    with pytest.raises(ValueError, match=r"^grid_name: .* is not a grid name"):
        limits.grid_name(name)


@pytest.mark.parametrize(
    "url",
    [
        "https://lab-coordinator",
        "https://coordinator.grid.example.edu/",
        "https://lab-coordinator:8443/grid",
        "https://10.89.64.13",
    ],
)
def test_coordinator_urls(url: str) -> None:
    assert limits.coordinator_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://lab-coordinator",
        "https://",
        "https://user:secret@lab-coordinator",
        "https://lab-coordinator/?tenant=1",
        "https://lab-coordinator/#x",
        "https://lab coordinator",
        "https://lab-coordinator:99999",
        "lab-coordinator",
        "",
        None,
        443,
    ],
)
def test_bad_coordinator_urls(url: object) -> None:
    with pytest.raises(ValueError, match=r"^grid_coordinator_url: .* must be an https:// URL"):
        limits.coordinator_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://lab-coordinator/images/x.qcow2",
        "https://mirror.example.edu:8443/images/x.vdi?token=1",
    ],
)
def test_image_urls(url: str) -> None:
    assert limits.image_url(url, allow_insecure_http=False) == url
    assert limits.image_url(url, allow_insecure_http=True) == url


def test_a_plain_http_image_url_is_refused_naming_the_variable() -> None:
    with pytest.raises(
        ValueError, match=r"^image URL: .*plain http://.*grid_images_allow_insecure"
    ):
        limits.image_url("http://lab-coordinator/images/x.qcow2", allow_insecure_http=False)
    with pytest.raises(ValueError, match=r"^images\.base_url: .*plain http://"):
        limits.image_url("http://m/i/", allow_insecure_http=False, name="images.base_url")


def test_a_lab_may_allow_plain_http_image_urls() -> None:
    url = "http://lab-coordinator/images/x.qcow2"
    assert limits.image_url(url, allow_insecure_http=True) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://lab-coordinator/x.qcow2",
        "file:///etc/passwd",
        "https://",
        "https://user:secret@lab-coordinator/x",
        "https://lab coordinator/x",
        "https://lab-coordinator:99999/x",
        "/images/x.qcow2",
        "",
        None,
        443,
    ],
)
def test_bad_image_urls(url: object) -> None:
    for allow in (False, True):
        with pytest.raises(ValueError, match=r"^image URL: .* is not an https:// "):
            limits.image_url(url, allow_insecure_http=allow)


def test_the_docs_give_every_range() -> None:
    """docs/grid-model.md's rule table states each range the code applies."""
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in (ROOT / "docs/grid-model.md").read_text().splitlines()
        if line.startswith("| `grid_")
    }
    wanted = {**limits.RANGES, **{f"grid_vm_types[].{k}": r for k, r in catalogue.RANGES.items()}}
    for variable, bounds in wanted.items():
        row = rows[variable]
        if bounds.maximum is None:
            assert f"at least {bounds.minimum}" in row, row
        else:
            assert f"{bounds.minimum} to {bounds.maximum}" in row, row
