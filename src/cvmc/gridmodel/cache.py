"""The research VMs' caching proxy (``grid_cache``): where it is and what it may fetch.

``{"address": "", "port": 3128, "domains": []}``. With an ``address``, the role
``research_cache`` runs squid there for the research network, and every research VM image sends
its jobs' HTTP(S) traffic and its CVMFS client through it (roles/research_cache/README.md):
inputs that many jobs read are fetched once, close to the VMs. The proxy is a pool service like
any other, so a VM's traffic to it passes the gateway's allow list and the VM's bandwidth cap;
``grid_pool_services`` must admit it (checked here, :func:`admitted`).

The proxy fetches only from ``domains`` (squid ``dstdomain``: ``.cern.ch`` is that domain and
every name under it) and never from the campus LAN, the research network or the operators'
networks, whatever a name resolves to.

The ``grid`` role's gate calls :func:`parse_cache` and :func:`admitted`; the roles render what
it returns. Pure; every error is a ``ValueError`` whose message starts with the variable it is
about.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cvmc.gridmodel import limits

__all__ = [
    "CACHE_KEYS",
    "MAX_DOMAINS",
    "OFF",
    "Cache",
    "admitted",
    "parse_cache",
    "proxy_environment",
    "settings",
]

CACHE_KEYS: tuple[str, ...] = ("address", "port", "domains")
#: squid reads its ACLs into memory at start; a list this long is already a policy smell.
MAX_DOMAINS = 64
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
#: A DNS name of two labels or more, with an optional leading dot (squid: the name and every
#: name under it). The last label has a letter: an address is not a domain.
_DOMAIN = re.compile(rf"\A\.?({_LABEL}\.)+[a-z0-9-]*[a-z][a-z0-9-]*\Z")


@dataclass(frozen=True)
class Cache:
    address: str = ""
    port: int = 3128
    domains: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    @property
    def proxy_url(self) -> str:
        """What a research VM's jobs and CVMFS client are given (``http_proxy``)."""
        return f"http://{self.address}:{self.port}" if self.enabled else ""


#: The default: no cache; the VMs' jobs reach only what the gateway admits.
OFF = Cache()


def parse_cache(raw: object, *, name: str = "grid_cache") -> Cache:
    if not isinstance(raw, Mapping):
        raise ValueError(
            f'{name}: {raw!r} is not a mapping; give {{address: ADDRESS or "", port: N, '
            "domains: [...]}"
        )
    limits.refuse_unknown_keys(raw, CACHE_KEYS, name)
    address = raw.get("address", OFF.address)
    if address is None:
        address = ""
    if not isinstance(address, str):
        raise ValueError(f'{name}.address: {address!r} is not an IPv4 address or ""')
    if address:
        try:
            parsed = ipaddress.IPv4Address(address)
        except ValueError:
            raise ValueError(
                f"{name}.address: {address!r} is not an IPv4 address (the address research VMs "
                'reach the cache at), or "" for no cache'
            ) from None
        if parsed.is_loopback or parsed.is_unspecified or parsed.is_multicast:
            raise ValueError(f"{name}.address: {address} is not an address research VMs can reach")
    port = limits.whole_number(
        raw.get("port", OFF.port), name=f"{name}.port", minimum=1, maximum=65535
    )
    domains = _domains(raw.get("domains", list(OFF.domains)), f"{name}.domains")
    if address and not domains:
        raise ValueError(
            f"{name}.domains: list the domains the cache may fetch from (.cern.ch for CVMFS's "
            "stratum 1 servers, say); with none it would refuse every request"
        )
    return Cache(address=address, port=port, domains=domains)


def _domains(raw: object, name: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise ValueError(f"{name}: {raw!r} is not a list of domains (like .cern.ch)")
    if len(raw) > MAX_DOMAINS:
        raise ValueError(f"{name}: {len(raw)} domains; give at most {MAX_DOMAINS}")
    domains: list[str] = []
    for i, domain in enumerate(raw):
        label = f"{name}[{i}]"
        if not isinstance(domain, str) or len(domain) > 254 or not _DOMAIN.match(domain):
            raise ValueError(
                f"{label}: {domain!r} is not a domain of two labels or more in lower case "
                "(cvmfs.example.org, or .example.org for it and every name under it)"
            )
        covering = next((d for d in domains if _covers(d, domain) or _covers(domain, d)), None)
        if covering is not None:
            raise ValueError(
                f"{label}: {domain} and {covering} overlap (squid refuses both in one list); "
                "keep the wider one"
            )
        domains.append(domain)
    return tuple(domains)


def _covers(wide: str, narrow: str) -> bool:
    """Whether squid's dstdomain entry ``wide`` matches every name ``narrow`` does."""
    if wide == narrow:
        return True
    return wide.startswith(".") and (narrow == wide[1:] or narrow.endswith(wide))


def admitted(cache: Cache, services: Sequence[Mapping[str, object]]) -> bool:
    """Whether a ``grid_pool_services`` entry lets research VMs reach the cache: one of its
    addresses (or CIDRs) holds the cache's address and its ``tcp`` ports hold the cache's port.
    Malformed entries admit nothing (they are the services check's problem)."""
    if not cache.enabled:
        return True
    address = ipaddress.IPv4Address(cache.address)
    for service in services:
        tcp = service.get("tcp")
        if not isinstance(tcp, Sequence) or cache.port not in tcp:
            continue
        addresses = service.get("addresses")
        if not isinstance(addresses, Sequence) or isinstance(addresses, str):
            continue
        for entry in addresses:
            try:
                if address in ipaddress.IPv4Network(str(entry), strict=False):
                    return True
            except ValueError:
                continue
    return False


def proxy_environment(cache: Cache) -> dict[str, str]:
    """The environment a research VM gives its jobs and its HTCondor daemons (whose file
    transfer plugins fetch ``http://`` inputs): every spelling tools read, and loopback kept
    direct. Empty without a cache."""
    if not cache.enabled:
        return {}
    url = cache.proxy_url
    return {
        "http_proxy": url,
        "https_proxy": url,
        "HTTP_PROXY": url,
        "HTTPS_PROXY": url,
        "no_proxy": "localhost,127.0.0.1",
        "NO_PROXY": "localhost,127.0.0.1",
    }


def settings(raw: object, *, name: str = "grid_cache") -> dict[str, object]:
    """``grid_cache`` as the roles render it: its keys with their defaults filled in, plus
    ``enabled``, ``proxy_url`` and ``environment`` (:func:`proxy_environment`)."""
    parsed = parse_cache(raw, name=name)
    return {
        "enabled": parsed.enabled,
        "address": parsed.address,
        "port": parsed.port,
        "domains": list(parsed.domains),
        "proxy_url": parsed.proxy_url,
        "environment": proxy_environment(parsed),
    }
