"""cvmc.gridmodel.cache: the research VMs' caching proxy in the grid model (grid_cache)."""

from __future__ import annotations

import pytest

from cvmc.gridmodel import cache

ON = {"address": "10.10.20.30", "port": 3128, "domains": [".cern.ch", "data.example.edu"]}
SERVICES = [
    {"name": "htcondor", "addresses": ["10.10.20.11"], "tcp": [9618]},
    {"name": "cache", "addresses": ["10.10.20.30"], "tcp": [3128]},
]


def test_the_default_is_no_cache_and_gives_the_vms_nothing() -> None:
    off = cache.parse_cache({})
    assert off == cache.OFF
    assert not off.enabled
    assert off.proxy_url == ""
    assert cache.proxy_environment(off) == {}
    assert cache.admitted(off, [])
    assert cache.settings({"address": "", "port": 3128, "domains": []})["enabled"] is False


def test_a_cache_gives_the_vms_its_url_in_every_spelling() -> None:
    parsed = cache.parse_cache(ON)
    assert parsed.enabled
    assert parsed.proxy_url == "http://10.10.20.30:3128"
    env = cache.proxy_environment(parsed)
    assert {env[k] for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")} == {
        "http://10.10.20.30:3128"
    }
    assert env["no_proxy"] == "localhost,127.0.0.1"
    rendered = cache.settings({"address": "10.10.20.30", "domains": [".cern.ch"]})
    assert rendered["port"] == 3128  # the default, filled in for the roles
    assert rendered["domains"] == [".cern.ch"]
    assert rendered["proxy_url"] == "http://10.10.20.30:3128"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("10.10.20.30", "grid_cache: '10.10.20.30' is not a mapping"),
        ({**ON, "size": 1}, "grid_cache.size: unknown key"),
        (
            {**ON, "address": "cache.example.edu"},
            "grid_cache.address: 'cache.example.edu' is not an IPv4 address",
        ),
        ({**ON, "address": 3128}, "grid_cache.address: 3128 is not an IPv4 address"),
        (
            {**ON, "address": "127.0.0.1"},
            "grid_cache.address: 127.0.0.1 is not an address research VMs can reach",
        ),
        ({**ON, "port": 0}, "grid_cache.port: 0 is out of range"),
        ({**ON, "port": "3128"}, "grid_cache.port: '3128' is not a whole number"),
        ({**ON, "domains": []}, "grid_cache.domains: list the domains the cache may fetch from"),
        ({**ON, "domains": ".cern.ch"}, "grid_cache.domains: '.cern.ch' is not a list of domains"),
        ({**ON, "domains": ["ch"]}, "grid_cache.domains[0]: 'ch' is not a domain of two labels"),
        ({**ON, "domains": ["."]}, "grid_cache.domains[0]: '.' is not a domain"),
        ({**ON, "domains": ["10.1.2.3"]}, "grid_cache.domains[0]: '10.1.2.3' is not a domain"),
        ({**ON, "domains": ["CERN.ch"]}, "grid_cache.domains[0]: 'CERN.ch' is not a domain"),
        ({**ON, "domains": ["a b.org"]}, "grid_cache.domains[0]: 'a b.org' is not a domain"),
        (
            {**ON, "domains": [".cern.ch", "cvmfs.cern.ch"]},
            "grid_cache.domains[1]: cvmfs.cern.ch and .cern.ch overlap",
        ),
        (
            {**ON, "domains": ["cern.ch", ".cern.ch"]},
            "grid_cache.domains[1]: .cern.ch and cern.ch overlap",
        ),
        ({**ON, "domains": ["a.org", "a.org"]}, "grid_cache.domains[1]: a.org and a.org overlap"),
        (
            {**ON, "domains": [f"d{i}.example.org" for i in range(cache.MAX_DOMAINS + 1)]},
            f"grid_cache.domains: {cache.MAX_DOMAINS + 1} domains; give at most",
        ),
    ],
)
def test_a_bad_cache_is_refused_naming_the_key(raw: object, message: str) -> None:
    with pytest.raises(
        ValueError, match="^" + message.replace(".", r"\.").replace("[", r"\[").replace("(", r"\(")
    ):
        cache.parse_cache(raw)


def test_a_domain_and_a_sibling_do_not_overlap() -> None:
    parsed = cache.parse_cache({**ON, "domains": [".cern.ch", "xcern.ch", ".opensciencegrid.org"]})
    assert parsed.domains == (".cern.ch", "xcern.ch", ".opensciencegrid.org")


@pytest.mark.parametrize(
    ("services", "admitted"),
    [
        (SERVICES, True),
        ([{"name": "pool", "addresses": ["10.10.20.0/24"], "tcp": [443, 3128]}], True),
        ([{"name": "cache", "addresses": ["10.10.20.30"], "tcp": [8080]}], False),  # wrong port
        ([{"name": "cache", "addresses": ["10.10.20.31"], "tcp": [3128]}], False),  # wrong host
        ([{"name": "cache", "addresses": ["10.10.20.30"], "udp": [3128]}], False),  # not TCP
        ([{"name": "cache", "addresses": "10.10.20.30", "tcp": [3128]}], False),  # malformed
        ([{"name": "cache", "addresses": ["nonsense"], "tcp": [3128]}], False),
        ([], False),
    ],
)
def test_the_cache_must_be_admitted_by_a_pool_service(
    services: list[dict[str, object]], admitted: bool
) -> None:
    assert cache.admitted(cache.parse_cache(ON), services) is admitted
