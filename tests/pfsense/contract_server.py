"""An in-process pfSense REST API v2 double that enforces the published contract.

Every request is checked against ``pfrest-v2.4.0-contract.json`` (beside this file; copied
from the pfrest v2.4.0 OpenAPI document's per-endpoint and per-model docs, see its ``source``):
the path and method must exist, the query parameters must be the endpoint's, and the JSON body
must match the endpoint's request model: required fields present (a field with
``available_when`` only when its condition holds), no unknown or readonly field, every value of
the listed type, enum members, length/item/number constraints, nested models recursively, and
``null`` only where nullable. A request that breaks the contract gets 400 (or 404/405 for an
unknown path or method) and changes nothing. Nothing here is written per endpoint: the checks
come from the contract.

Objects are kept the way pfSense keeps them: a list per model whose ``id`` is the position (so
ids shift after a delete), defaults filled in, readonly fields set by the server (``refid``,
``vpnid``, limiter ``number``, rule ``tracker``), references checked (a CSO's servers, a rule's
limiters and aliases, a CRL's CA), and firewall objects staged until ``POST /firewall/apply``.

Run as a script, it serves one empty firewall on 127.0.0.1 as a background process for
molecule's ``pfsense`` scenario (``main``, below): ``serve`` writes its URL and pid to files and
exits by itself after ``--max-seconds``; ``stop`` ends the one a pid file names.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import os
import secrets
import signal
import ssl
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONTRACT_PATH = Path(__file__).with_name("pfrest-v2.4.0-contract.json")
Obj = dict[str, Any]
#: Models whose changes wait for POST /api/v2/firewall/apply.
STAGED_PREFIX = "/api/v2/firewall/"


class ContractError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_contract(path: Path = CONTRACT_PATH) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


# ----------------------------------------------------------------------------- validation


_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _type_ok(spec_type: str, value: Any) -> bool:
    check = _TYPES.get(spec_type)
    return bool(check and check(value))


def _condition_holds(conditions: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    """available_when: every listed sibling condition holds (the strict reading)."""
    for sibling, test in conditions.items():
        value = obj.get(sibling)
        if "equals" in test and value != test["equals"]:
            return False
        if "not_equals" in test and value == test["not_equals"]:
            return False
        if "one_of" in test and value not in test["one_of"]:
            return False
        if "not_one_of" in test and value in test["not_one_of"]:
            return False
    return True


class Contract:
    """The contract JSON and the checks it implies."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.endpoints: Mapping[str, Any] = data["endpoints"]
        self.models: Mapping[str, Any] = data["models"]

    def defaults(self, model: str) -> Obj:
        out: Obj = {}
        for name, spec in self.models[model]["fields"].items():
            if "default" in spec and not spec.get("readonly"):
                out[name] = copy.deepcopy(spec["default"])
        return out

    def with_defaults(self, model: str, obj: Obj) -> Obj:
        """The object as pfSense stores it: defaults filled in, nested objects too."""
        fields = self.models[model]["fields"]
        out = {**self.defaults(model), **obj}
        out = {
            k: v
            for k, v in out.items()
            if k in obj or _condition_holds(fields[k].get("available_when", {}), out)
        }
        for name, value in out.items():
            items = fields.get(name, {}).get("items")
            if isinstance(value, list) and items in self.models:
                out[name] = [
                    self.with_defaults(items, v) if isinstance(v, dict) else v for v in value
                ]
        return out

    def check_value(self, where: str, spec: Mapping[str, Any], value: Any) -> list[str]:
        if value is None:
            return [] if spec.get("nullable") else [f"{where}: null is not allowed"]
        if not _type_ok(spec["type"], value):
            return [f"{where}: {value!r} is not of type {spec['type']}"]
        errors: list[str] = []
        cons = spec.get("constraints", {})
        if "enum" in spec and value not in spec["enum"]:
            errors.append(f"{where}: {value!r} is not one of {spec['enum']}")
        if isinstance(value, str):
            if "max_length" in cons and len(value) > cons["max_length"]:
                errors.append(f"{where}: longer than {cons['max_length']} characters")
            if "min_length" in cons and len(value) < cons["min_length"]:
                errors.append(f"{where}: shorter than {cons['min_length']} characters")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in cons and value < cons["minimum"]:
                errors.append(f"{where}: {value} is below the minimum {cons['minimum']}")
            if "maximum" in cons and value > cons["maximum"]:
                errors.append(f"{where}: {value} is above the maximum {cons['maximum']}")
        if isinstance(value, list):
            errors += self._check_list(where, spec, value)
        if spec["type"] == "object" and spec.get("model") in self.models:
            errors += self.check_body(spec["model"], value, label=where)
        return errors

    def _check_list(self, where: str, spec: Mapping[str, Any], value: list[Any]) -> list[str]:
        errors: list[str] = []
        cons = spec.get("constraints", {})
        if "max_items" in cons and len(value) > cons["max_items"]:
            errors.append(f"{where}: more than {cons['max_items']} items")
        if "min_items" in cons and len(value) < cons["min_items"]:
            errors.append(f"{where}: fewer than {cons['min_items']} items")
        items = spec.get("items")
        for i, item in enumerate(value):
            label = f"{where}[{i}]"
            if isinstance(items, str) and items in self.models:
                if not isinstance(item, dict):
                    errors.append(f"{label}: not an object of {items}")
                else:
                    errors += self.check_body(items, item, label=label)
            elif items and not _type_ok(items, item):
                errors.append(f"{label}: {item!r} is not of type {items}")
            if "items_enum" in spec and item not in spec["items_enum"]:
                errors.append(f"{label}: {item!r} is not one of {spec['items_enum']}")
            if (
                isinstance(item, str)
                and "items_max_length" in cons
                and len(item) > cons["items_max_length"]
            ):
                errors.append(f"{label}: longer than {cons['items_max_length']} characters")
        return errors

    def check_body(
        self, model: str, body: Mapping[str, Any], *, label: str = "", context: Obj | None = None
    ) -> list[str]:
        """Every contract rule for one request body; `context` is the object after the change."""
        fields = self.models[model]["fields"]
        merged = {**self.defaults(model), **(context or {}), **body}
        errors = []
        for name, value in body.items():
            where = f"{label}.{name}" if label else name
            spec = fields.get(name)
            if spec is None:
                errors.append(f"{where}: unknown field for {model}")
                continue
            if spec.get("readonly"):
                errors.append(f"{where}: readonly, set by the server")
                continue
            errors += self.check_value(where, spec, value)
            cond = spec.get("available_when")
            if cond and not _condition_holds(cond, merged):
                errors.append(f"{where}: only applies when {json.dumps(cond)}")
        for name, spec in fields.items():
            if not spec.get("required") or name in body:
                continue
            cond = spec.get("available_when")
            if cond and not _condition_holds(cond, merged):
                continue
            errors.append(f"{label + '.' if label else ''}{name}: required by {model}")
        return errors

    def check_query(
        self, endpoint: Mapping[str, Any], model: str, query: Mapping[str, list[str]]
    ) -> list[str]:
        spec = endpoint.get("query", {})
        errors = []
        for name, values in query.items():
            if name in spec and name != "query":
                want = spec[name]["type"]
                types = want if isinstance(want, list) else [want]
                if (
                    "integer" in types
                    and "string" not in types
                    and not all(v.lstrip("-").isdigit() for v in values)
                ):
                    errors.append(f"query {name}: {values} is not an integer")
            elif "query" in spec and name in self.models[model]["fields"]:
                continue  # a field=value filter of a plural endpoint
            else:
                errors.append(f"query {name}: not a parameter of this endpoint")
        for name, qspec in spec.items():
            if qspec.get("required") and name not in query:
                errors.append(f"query {name}: required")
        return errors


# ----------------------------------------------------------------------------- the firewall


@dataclass
class Firewall:
    """Objects per model, staged firewall state and the applied state."""

    api_key: str
    version: str = "v2.4.0"
    store: dict[str, list[Obj]] = field(default_factory=dict)
    singletons: dict[str, Obj] = field(
        default_factory=lambda: {"OutboundNATMode": {"mode": "automatic"}}
    )
    applied: dict[str, Any] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    fail_on: tuple[str, str] | None = None  # (method, path): answer 500 to the next such call
    lock: threading.Lock = field(default_factory=threading.Lock)

    def staged_models(self, contract: Contract) -> list[str]:
        return sorted(
            {
                ep["associated_model"]
                for path, methods in contract.endpoints.items()
                if path.startswith(STAGED_PREFIX)
                for ep in methods.values()
                if ep["associated_model"] != "FirewallApply"
            }
        )

    def firewall_view(self, contract: Contract) -> dict[str, Any]:
        view: dict[str, Any] = {}
        for model in self.staged_models(contract):
            view[model] = copy.deepcopy(self.singletons.get(model, self.store.get(model, [])))
        return view

    def apply(self, contract: Contract) -> None:
        self.applied = self.firewall_view(contract)

    def pending(self, contract: Contract) -> list[str]:
        view = self.firewall_view(contract)
        return sorted(m for m in view if view[m] != self.applied.get(m))

    def objects(self, model: str) -> list[Obj]:
        return [{**obj, "id": i} for i, obj in enumerate(self.store.get(model, []))]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


class Api:
    """Request handling: contract checks, then pfSense-like storage and references."""

    def __init__(self, contract: Contract, firewall: Firewall) -> None:
        self.contract = contract
        self.fw = firewall

    def handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, Any]:
        url = urlsplit(raw_path)
        path, query = url.path, parse_qs(url.query, keep_blank_values=True)
        with self.fw.lock:
            self.fw.requests.append((method, path, len(raw)))
            if headers.get("x-api-key") != self.fw.api_key:
                raise ContractError(401, "Authentication failed: the API key is not valid")
            endpoint = self.contract.endpoints.get(path)
            if endpoint is None:
                raise ContractError(404, f"Endpoint {path} not found")
            if method not in endpoint:
                raise ContractError(405, f"Method {method} not allowed on {path}")
            if self.fw.fail_on == (method, path):
                self.fw.fail_on = None
                raise ContractError(500, f"injected failure of {method} {path}")
            spec = endpoint[method]
            model = spec["associated_model"]
            errors = self.contract.check_query(spec, model, query)
            body: Any = None
            if method in ("POST", "PATCH", "PUT"):
                if headers.get("content-type", "").split(";")[0] != "application/json":
                    raise ContractError(415, "Content-Type must be application/json")
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    raise ContractError(400, "body is not JSON") from None
                if not isinstance(body, dict):
                    raise ContractError(400, f"{method} {path}: the body must be a JSON object")
            if errors:
                raise ContractError(400, "; ".join(errors))
            return 200, self._dispatch(method, path, spec, model, query, body)

    # -- storage
    def _dispatch(  # noqa: PLR0911, PLR0917 - one answer per kind of endpoint
        self,
        method: str,
        path: str,
        spec: Mapping[str, Any],
        model: str,
        query: Mapping[str, list[str]],
        body: Obj | None,
    ) -> Any:
        if model == "RESTAPIVersion":
            return {
                "current_version": self.fw.version,
                "latest_version": self.fw.version,
                "update_available": False,
                "available_versions": [self.fw.version],
            }
        if model == "FirewallApply":
            if method == "POST":
                self._check(spec["body"], body or {})
                self.fw.apply(self.contract)
            pending = self.fw.pending(self.contract)
            return {"applied": not pending, "pending_subsystems": pending}
        if model in self.fw.singletons:
            if method == "PATCH":
                self._check(spec["body"], body or {})
                self.fw.singletons[model].update(body or {})
            return dict(self.fw.singletons[model])
        if model == "NetworkInterface":
            interfaces = [
                {"id": "wan", "if": "vtnet0", "descr": "WAN", "enable": True},
                {"id": "lan", "if": "vtnet1", "descr": "LAN", "enable": True},
            ]
            return interfaces if spec["endpoint_type"] == "plural" else interfaces[0]
        items = self.fw.store.setdefault(model, [])
        if spec["endpoint_type"] == "plural":
            if method == "GET":
                filters = {
                    k: v[0] for k, v in query.items() if k in self.contract.models[model]["fields"]
                }
                return [
                    o
                    for o in self.fw.objects(model)
                    if all(str(o.get(k)) == v for k, v in filters.items())
                ]
            raise ContractError(405, f"{method} {path} is not used by these tests")
        if method == "POST":
            assert body is not None
            self._check(spec["body"], body)
            obj = self.contract.with_defaults(model, body)
            self._server_fields(model, obj, items)
            self._references(model, obj)
            items.append(obj)
            return {**obj, "id": len(items) - 1}
        index = self._index(query, body, items, path)
        if method == "GET":
            return {**items[index], "id": index}
        if method == "PATCH":
            assert body is not None
            changes = {k: v for k, v in body.items() if k != "id"}
            self._check(spec["body"], body, context=items[index])
            updated = self.contract.with_defaults(model, {**items[index], **changes})
            self._references(model, updated)
            items[index] = updated
            return {**updated, "id": index}
        # DELETE
        self._in_use(model, items[index])
        gone = items.pop(index)
        return {**gone, "id": index}

    def _check(self, model: str, body: Obj, context: Obj | None = None) -> None:
        errors = self.contract.check_body(model, body, context=context)
        if errors:
            raise ContractError(400, "; ".join(errors))

    @staticmethod
    def _index(
        query: Mapping[str, list[str]], body: Obj | None, items: list[Obj], path: str
    ) -> int:
        raw: Any = body["id"] if body and "id" in body else (query.get("id") or [""])[0]
        try:
            index = int(raw)
        except (TypeError, ValueError):
            raise ContractError(400, f"{path}: id {raw!r} is not an object id") from None
        if not 0 <= index < len(items):
            raise ContractError(404, f"{path}: no object with id {index}")
        return index

    def _server_fields(self, model: str, obj: Obj, items: list[Obj]) -> None:
        fields = self.contract.models[model]["fields"]
        if "refid" in fields:
            obj["refid"] = secrets.token_hex(7)[:13]
        if "vpnid" in fields:
            obj["vpnid"] = max([o["vpnid"] for o in items] + [0]) + 1
            obj["vpnif"] = f"ovpns{obj['vpnid']}"
        if model == "TrafficShaperLimiter":
            obj["number"] = max([o["number"] for o in items] + [0]) + 1
        if "tracker" in fields:
            obj["tracker"] = 1_700_000_000 + len(self.fw.requests)

    def _refids(self, model: str, attr: str) -> set[str]:
        return {str(o.get(attr)) for o in self.fw.store.get(model, [])}

    #: (model, field, referenced model, its attribute): references pfSense resolves on save.
    REFERENCES = (
        ("CertificateRevocationList", "caref", "CertificateAuthority", "refid"),
        ("OpenVPNServer", "caref", "CertificateAuthority", "refid"),
        ("OpenVPNServer", "certref", "Certificate", "refid"),
        ("OpenVPNClientSpecificOverride", "server_list", "OpenVPNServer", "vpnid"),
        ("FirewallRule", "dnpipe", "TrafficShaperLimiter", "name"),
        ("FirewallRule", "pdnpipe", "TrafficShaperLimiter", "name"),
    )

    def _references(self, model: str, obj: Obj) -> None:
        """The cross-object checks pfSense makes before it stores an object."""
        missing = []
        for owner, name, target, attr in self.REFERENCES:
            value = obj.get(name)
            if owner != model or value in (None, "", []):
                continue
            known = self._refids(target, attr)
            for item in value if isinstance(value, list) else [value]:
                if str(item) not in known:
                    missing.append(f"{name} {item!r} is no {target} {attr}")
        if model in ("FirewallRule", "OutboundNATMapping"):
            aliases = self._refids("FirewallAlias", "name")
            for end in ("source", "destination", "destination_port"):
                value = str(obj.get(end) or "any")
                plain = value == "any" or _is_address(value) or value.isdigit()
                if not plain and not value.endswith(":ip") and value not in aliases:
                    missing.append(f"{end} {value!r} is no address, network or alias")
        if missing:
            raise ContractError(400, "; ".join(missing))

    def _in_use(self, model: str, obj: Obj) -> None:
        users: list[str] = []
        rules = self.fw.store.get("FirewallRule", []) + self.fw.store.get("OutboundNATMapping", [])
        if model == "TrafficShaperLimiter":
            users = [
                str(r.get("descr"))
                for r in rules
                if obj["name"] in (r.get("dnpipe"), r.get("pdnpipe"))
            ]
        if model == "FirewallAlias":
            users = [
                str(r.get("descr"))
                for r in rules
                if obj["name"] in (r.get("source"), r.get("destination"), r.get("destination_port"))
            ]
        if users:
            raise ContractError(409, f"{obj.get('name')} is in use by {users}")


# ----------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    api: Api

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            headers = {k.lower(): str(v) for k, v in self.headers.items()}
            status, data = self.api.handle(self.command, self.path, headers, raw)
            envelope = {
                "code": status,
                "status": "ok",
                "response_id": "SUCCESS",
                "message": "",
                "data": data,
            }
        except ContractError as exc:
            status = exc.status
            envelope = {
                "code": status,
                "status": "error",
                "response_id": "CONTRACT_VIOLATION",
                "message": str(exc),
                "data": [],
            }
        payload = json.dumps(envelope).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve  # noqa: N815 - http.server's names

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def serve(
    firewall: Firewall, *, contract: Contract | None = None, tls: tuple[str, str] | None = None
) -> Iterator[str]:
    """Run the double on 127.0.0.1 in a thread; yields its base URL."""
    api = Api(contract or Contract(load_contract()), firewall)
    if not firewall.applied:
        firewall.apply(api.contract)  # what the firewall runs when the test starts
    handler = type("Handler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    scheme = "http"
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------- CLI

#: A process of this script, as /proc/<pid>/cmdline shows it (so a reused pid is never killed).
_SCRIPT = Path(__file__).name


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _is_double(pid: int) -> bool:
    """Is the process alive (not a zombie) and running this script?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(_SCRIPT.encode()) for arg in cmdline)


def _double_pid(pid_file: Path) -> int | None:
    """The pid in the file if that process is a live double, else None."""
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and _is_double(pid) else None


def stop(pid_file: Path, *, wait: float = 10.0) -> int | None:
    """SIGTERM the double the pid file names, wait for it to go; its pid, or None if none ran."""
    pid = _double_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return None
    with suppress(ProcessLookupError):  # it may exit at any moment
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while _is_double(pid):
        if time.monotonic() > deadline:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return pid


def _detach(url_file: Path, log_file: Path | None, timeout: float) -> bool:
    """Fork: the child goes on as the server, in its own session with its output in the log.
    The parent returns True once the child has written its URL (False: it died or hung)."""
    child = os.fork()
    if child == 0:
        os.setsid()
        out = os.open(log_file or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if url_file.exists():
            print(url_file.read_text(encoding="utf-8").strip())
            return True
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            print(f"the double exited with status {status} before serving", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.05)
    print(f"the double wrote no URL within {timeout} s", file=sys.stderr)
    sys.exit(1)


def _serve_until(args: argparse.Namespace) -> int:
    api_key = args.api_key_file.read_text(encoding="utf-8").strip()
    if not api_key:
        print(f"--api-key-file {args.api_key_file}: empty", file=sys.stderr)
        return 2
    previous = stop(args.pid_file)
    if previous is not None:
        print(f"stopped the previous double (pid {previous})")
    args.url_file.unlink(missing_ok=True)
    if args.detach and _detach(args.url_file, args.log_file, args.ready_seconds):
        return 0
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    _write_atomically(args.pid_file, f"{os.getpid()}\n")
    firewall = Firewall(api_key=api_key)
    try:
        with serve(firewall) as url:
            _write_atomically(args.url_file, url + "\n")
            print(f"serving {url} for at most {args.max_seconds:g} s", flush=True)
            if not done.wait(args.max_seconds):
                print(f"lifetime of {args.max_seconds:g} s reached", flush=True)
    finally:
        args.url_file.unlink(missing_ok=True)
        if _double_pid(args.pid_file) == os.getpid():
            args.pid_file.unlink(missing_ok=True)
    print(f"stopped after {len(firewall.requests)} requests", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``serve``: one empty firewall on 127.0.0.1 (a free port), for a bounded time; ``stop``."""
    parser = argparse.ArgumentParser(
        prog=_SCRIPT, description="The pfrest v2.4.0 contract double on loopback."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve until stopped or --max-seconds have passed")
    run.add_argument("--url-file", type=Path, required=True, help="written once serving")
    run.add_argument("--pid-file", type=Path, required=True, help="a double it names is stopped")
    run.add_argument("--api-key-file", type=Path, required=True, help="the accepted API key")
    run.add_argument("--max-seconds", type=float, default=900.0, help="lifetime (default 900)")
    run.add_argument("--detach", action="store_true", help="return once serving, in background")
    run.add_argument("--log-file", type=Path, help="the detached double's output")
    run.add_argument("--ready-seconds", type=float, default=30.0, help=argparse.SUPPRESS)
    halt = sub.add_parser("stop", help="stop the double the pid file names")
    halt.add_argument("--pid-file", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "stop":
        pid = stop(args.pid_file)
        print(f"stopped pid {pid}" if pid is not None else "not running")
        return 0
    if args.max_seconds <= 0:
        parser.error("--max-seconds must be positive")
    return _serve_until(args)


if __name__ == "__main__":
    sys.exit(main())
