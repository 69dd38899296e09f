"""The NoCloud seed: written by cvmc.gridmodel.seed, read by the research_vm role's reader."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType

import pytest

from cvmc.gridmodel import seed

READER = Path(__file__).resolve().parents[2] / "roles/research_vm/files/grid_seed.py"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
STATIC = "-----BEGIN OpenVPN Static key V1-----\nabcd\n-----END OpenVPN Static key V1-----\n"


def reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grid_seed", READER)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["grid_seed"] = module
    spec.loader.exec_module(module)
    return module


def identity(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "vm_name": "its-u11-boinc-20120415",
        "slot": 1,
        "client_config": "client\n",
        "ca_cert": PEM,
        "client_cert": PEM,
        "client_key": KEY,
        "tls_crypt_key": STATIC,
        "condor_token": "eyJhbGciOiJIUzI1NiJ9.token",
    }
    base.update(over)
    return base


def test_the_reader_writes_back_exactly_what_the_seed_carries(tmp_path: Path) -> None:
    files = seed.identity_files(**identity())  # type: ignore[arg-type]
    text = seed.user_data(files)
    parsed = reader().files_to_write(text)
    assert {str(p): (data, mode) for p, data, mode in parsed} == files
    assert files["/run/grid/vpn/client.key"][1] == 0o600
    assert files["/run/grid/vm_name"][0] == b"its-u11-boinc-20120415\n"


def test_the_reader_writes_files_atomically_with_their_modes(tmp_path: Path) -> None:
    module = reader()
    target = PurePosixPath(str(tmp_path)) / "vpn" / "client.key"
    module.write([(target, b"secret", 0o600)])
    written = Path(str(target))
    assert written.read_bytes() == b"secret"
    assert written.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in written.parent.iterdir()] == ["client.key"]


@pytest.mark.parametrize(
    ("user_data", "message"),
    [
        ("write_files: []", "not a #cloud-config"),
        ("#cloud-config\n{}", "no write_files"),
        ("#cloud-config\nwrite_files: [{path: /etc/passwd, content: x}]", "not under /run/grid"),
        ("#cloud-config\nwrite_files: [{path: /run/grid/../etc/x, content: x}]", "not under"),
        (
            "#cloud-config\nwrite_files: [{path: /run/grid/x, content: x, permissions: '4755'}]",
            "special bits",
        ),
        (
            "#cloud-config\nwrite_files: [{path: /run/grid/x, content: x, encoding: gzip}]",
            "not text or b64",
        ),
    ],
)
def test_the_reader_refuses_a_seed_that_reaches_outside_its_directory(
    user_data: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        reader().files_to_write(user_data)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"vm_name": "Bad Name"}, r"seed\.vm_name"),
        ({"slot": 100}, r"seed\.slot"),
        ({"client_key": "not a key"}, r"seed\.client_key"),
        ({"tls_crypt_key": PEM}, r"seed\.tls_crypt_key"),
    ],
)
def test_bad_identities_are_refused(over: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seed.identity_files(**identity(**over))  # type: ignore[arg-type]


def test_meta_data_and_paths_are_checked() -> None:
    assert seed.meta_data("vm-1234", "lab-desktop-1-vm0").startswith('{"instance-id": "vm-1234"')
    with pytest.raises(ValueError, match=r"seed\.hostname"):
        seed.meta_data("vm-1", "bad host")
    with pytest.raises(ValueError, match="not under /run/grid"):
        seed.user_data({"/etc/shadow": (b"x", 0o600)})


def test_the_reader_takes_the_vm_host_name_from_the_meta_data_the_agent_writes() -> None:
    module = reader()
    assert module.hostname_from(seed.meta_data("cvmc-d-slot0-l-1", "lab-desktop-1-vm0")) == (
        "lab-desktop-1-vm0"
    )
    assert module.hostname_from("") is None
    assert module.hostname_from('{"instance-id": "x"}') is None


@pytest.mark.parametrize(
    ("meta_data", "message"),
    [
        ('{"local-hostname": "bad host"}', "not a host name"),
        ('{"local-hostname": "a.b"}', "not a host name"),
        ('{"local-hostname": "-vm0"}', "not a host name"),
        ('{"local-hostname": "' + "a" * 64 + '"}', "not a host name"),
        ('{"local-hostname": ["vm0"]}', "not a host name"),
        ("[1, 2]", "not a mapping"),
        ('{"local-hostname": "vm0", "pad": "' + "x" * 5000 + '"}', "larger than 4096"),
    ],
)
def test_the_reader_refuses_a_host_name_that_is_not_one_label(meta_data: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reader().hostname_from(meta_data)


def test_the_hosts_file_names_the_vm_once_on_debians_own_name_line() -> None:
    hosts = "127.0.0.1\tlocalhost\n127.0.1.1\tresearch-vm\n::1\tlocalhost ip6-localhost\n"
    assert reader().hosts_with(hosts, "lab-desktop-1-vm0") == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\tlab-desktop-1-vm0\n"
    )
    assert reader().hosts_with("", "vm0") == "127.0.1.1\tvm0\n"


@pytest.fixture
def hosts_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Path]:
    """The reader with its hosts file in ``tmp_path`` (Debian's own-name line for ``vpn-vm1``)."""
    module = reader()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n127.0.1.1\tvpn-vm1\n")
    monkeypatch.setattr(module, "HOSTS", hosts)
    return module, hosts


def test_the_reader_sets_the_host_name_then_the_hosts_file(
    hosts_reader: tuple[ModuleType, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, hosts = hosts_reader
    set_to: list[str] = []
    monkeypatch.setattr(module.socket, "sethostname", set_to.append)  # never this machine's
    assert module.apply_hostname("lab-desktop-1-vm0") is None
    assert set_to == ["lab-desktop-1-vm0"]
    assert hosts.read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tlab-desktop-1-vm0\n"
    assert oct(hosts.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in hosts.parent.iterdir()] == ["hosts"]


def _refuse(*args: object) -> None:
    raise PermissionError(1, "Operation not permitted")


def _busy(*args: object) -> None:
    raise OSError(16, "Device or resource busy")  # a bind-mounted /etc/hosts


@pytest.mark.parametrize(
    ("sethostname", "replace", "why"),
    [
        # A container without CAP_SYS_ADMIN: neither name nor file changes.
        (_refuse, None, "the kernel's host name: Operation not permitted"),
        # A hosts file the runtime bind-mounted: it stays as it was, no temp file is left.
        (lambda name: None, _busy, "{hosts}: Device or resource busy"),
    ],
)
def test_a_host_name_that_cannot_be_set_leaves_the_hosts_file_as_it_was(
    hosts_reader: tuple[ModuleType, Path],
    monkeypatch: pytest.MonkeyPatch,
    sethostname: object,
    replace: object,
    why: str,
) -> None:
    module, hosts = hosts_reader
    before = hosts.read_text()
    monkeypatch.setattr(module.socket, "sethostname", sethostname)
    if replace is not None:
        monkeypatch.setattr(module.os, "replace", replace)
    assert module.apply_hostname("lab-desktop-1-vm0") == why.format(hosts=hosts)
    assert hosts.read_text() == before
    assert [p.name for p in hosts.parent.iterdir()] == ["hosts"]


def test_undecodable_or_oversized_meta_data_is_read_then_refused(tmp_path: Path) -> None:
    module = reader()
    (tmp_path / "user-data").write_text("#cloud-config\nwrite_files: []\n")
    (tmp_path / "meta-data").write_bytes(b'{"local-hostname": "vm\xff0"}')
    _, meta = module._read_pair(tmp_path)
    with pytest.raises(ValueError, match="not a host name"):
        module.hostname_from(meta)
    (tmp_path / "meta-data").write_bytes(b"#" * 10_000)
    _, meta = module._read_pair(tmp_path)
    assert len(meta) == module.MAX_META_DATA + 1  # read no further than one byte past the bound
    with pytest.raises(ValueError, match="larger than 4096"):
        module.hostname_from(meta)
