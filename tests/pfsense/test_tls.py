"""TLS verification against a real TLS server on loopback whose certificate nobody trusts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pfsense.conftest import API_KEY, make_cert, pem, rest
from pfsense.contract_server import Firewall, serve


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca = make_cert("pfSense webConfigurator CA", ca=True)
    cert, key = make_cert("127.0.0.1", issuer=ca, san="127.0.0.1")
    (tmp_path / "cert.pem").write_text(pem(cert))
    (tmp_path / "key.pem").write_text(pem(key))
    (tmp_path / "ca.pem").write_text(pem(ca[0]))
    with serve(
        Firewall(api_key=API_KEY), tls=(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    ) as url:
        yield url, tmp_path / "ca.pem"


def test_untrusted_certificate_is_refused_by_default(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server
    client = rest.PfsenseClient(url, API_KEY, rest.OpenUrlTransport(timeout=5))
    with pytest.raises(
        rest.PfsenseError, match=r"TLS verification failed.*pfsense_gateway_ca_path"
    ):
        client.version()


def test_the_firewalls_ca_makes_it_trusted(tls_server: tuple[str, Path]) -> None:
    url, ca = tls_server
    client = rest.PfsenseClient(url, API_KEY, rest.OpenUrlTransport(ca_path=str(ca), timeout=5))
    assert client.version() == "v2.4.0"


def test_a_wrong_ca_bundle_is_refused(tls_server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = tls_server
    other = tmp_path / "other-ca.pem"
    other.write_text(pem(make_cert("someone else", ca=True)[0]))
    client = rest.PfsenseClient(url, API_KEY, rest.OpenUrlTransport(ca_path=str(other), timeout=5))
    with pytest.raises(rest.PfsenseError, match=f"TLS verification failed.*{other}"):
        client.version()
