# Shared code of the pfsense_* modules: the pfSense REST API v2 (pfrest) client and the
# reconciler that brings a set of owned objects to a desired state.
#
# Plain HTTP over Ansible's open_url, not a client package: no published Python client covers
# pfrest v2's OpenVPN and limiter endpoints (see docs/pfsense.md). Standard library + ansible only.
"""pfSense REST API v2 client and reconciler of the pfsense_* modules.

Layers, in one file because Ansible ships a module's module_utils as single files:

- ``Transport`` (port) / ``OpenUrlTransport`` (adapter): one HTTP request, JSON in and out.
- ``PfsenseClient``: the API's conventions (X-API-Key, ``/api/v2`` paths, the response envelope,
  ids as query parameters) and clear errors (wrong key, TLS failure, old API version).
- ``KINDS`` and the pure planning functions: what we own (a marker at the start of the object's
  description), what conflicts with us (an object of someone else that has our key), and what
  to create, patch or delete.
- ``Reconciler``: reads everything first, refuses conflicts before any write, stages the
  writes, verifies the staged state, and only then applies the firewall. If anything fails
  part-way it undoes its own writes and never applies, so the running firewall keeps its
  previous applied state.
"""

from __future__ import annotations

import copy
import json
import re
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

API = "/api/v2"
#: The oldest pfrest version whose contract the modules follow (tests/pfsense/*contract.json).
MIN_VERSION = "2.4.0"
#: Fields whose values are secrets: never shown in a diff or an error.
SECRET_FIELDS = frozenset({"prv", "tls"})
REDACTED = "<redacted>"

Obj = dict[str, Any]


class PfsenseError(Exception):
    """A failure the user must act on; the message names the object or the setting."""


# --------------------------------------------------------------------------- transport


class Transport:
    """Port: send one HTTP request, return (status, parsed JSON body or None)."""

    def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Any]:
        raise NotImplementedError


class OpenUrlTransport(Transport):
    """Adapter over ansible.module_utils.urls' Request (open_url); TLS verified by default."""

    def __init__(
        self, *, validate_certs: bool = True, ca_path: str | None = None, timeout: float = 30.0
    ) -> None:
        self.validate_certs = validate_certs
        self.ca_path = ca_path or None
        self.timeout = timeout
        self._context: Any = None  # one TLS context for every request (loading CAs is slow)

    def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Any]:
        from ansible.module_utils.urls import Request, make_context  # noqa: PLC0415

        try:
            if self._context is None:
                self._context = make_context(
                    cafile=self.ca_path, validate_certs=self.validate_certs
                )
            response = Request().open(
                method,
                url,
                data=body,
                headers=dict(headers),
                validate_certs=self.validate_certs,
                ca_path=self.ca_path,
                timeout=self.timeout,
                follow_redirects="none",
                use_proxy=False,
                context=self._context,
            )
            status, raw = response.getcode(), response.read()
        except HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (URLError, ssl.SSLError, OSError, ValueError) as exc:
            raise PfsenseError(_connection_message(url, exc, self.ca_path)) from None
        except Exception as exc:  # ansible's SSLValidationError and friends
            raise PfsenseError(_connection_message(url, exc, self.ca_path)) from None
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, {"message": raw[:200].decode("utf-8", "replace")}


def _connection_message(url: str, exc: BaseException, ca_path: str | None) -> str:
    text = str(getattr(exc, "reason", exc))
    if (
        "CERTIFICATE_VERIFY_FAILED" in text
        or "certificate verify failed" in text.lower()
        or (isinstance(getattr(exc, "reason", exc), ssl.SSLError))
    ):
        where = f"the CA bundle {ca_path}" if ca_path else "the system's CA store"
        return (
            f"pfsense_gateway_url {url}: TLS verification failed ({text}); the firewall's "
            f"certificate is not trusted by {where}. Give its CA in pfsense_gateway_ca_path "
            "(verification stays on)."
        )
    return f"pfsense_gateway_url {url}: cannot reach the pfSense REST API ({text})"


# --------------------------------------------------------------------------- client


def parse_version(text: str, *, name: str = "version") -> tuple[int, ...]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-_+].*)?", str(text).strip())
    if not match:
        raise PfsenseError(f"{name}: {text!r} is not a version like v2.4.0")
    return tuple(int(part or 0) for part in match.groups())


class PfsenseClient:
    """pfrest v2 over a Transport: envelope unwrapped, errors made readable."""

    def __init__(self, base_url: str, api_key: str, transport: Transport) -> None:
        if not re.match(r"\Ahttps?://[^/\s]+", base_url or ""):
            raise PfsenseError(
                f"pfsense_gateway_url: {base_url!r} is not an http(s) URL of the firewall"
            )
        if not api_key:
            raise PfsenseError("pfsense_gateway_api_key: empty; create a key in System > REST API")
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.transport = transport
        self.requests = 0

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        what: str = "",
    ) -> Any:
        url = self.base_url + API + path
        if query:
            url += "?" + urlencode(dict(query))
        headers = {"X-API-Key": self._key, "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        self.requests += 1
        status, payload = self.transport.request(method, url, headers, data)
        message = payload.get("message", "") if isinstance(payload, dict) else ""
        label = f" ({what})" if what else ""
        if status == 401:
            raise PfsenseError(
                f"pfsense_gateway_api_key: the firewall at {self.base_url} refused the API key "
                f"(401 unauthorized) on {method} {API}{path}{label}"
            )
        if status == 403:
            raise PfsenseError(
                f"pfsense_gateway_api_key: the key's user may not {method} {API}{path}{label} "
                f"(403 forbidden: {message})"
            )
        if status == 404 and path == "/system/restapi/version":
            raise PfsenseError(
                f"pfsense_gateway_url {self.base_url}: no REST API v2 there (404 on {API}{path}); "
                f"install pfrest {MIN_VERSION} or later"
            )
        if not 200 <= status < 300:
            raise PfsenseError(f"{method} {API}{path}{label}: HTTP {status}: {message}")
        if not isinstance(payload, dict):
            raise PfsenseError(f"{method} {API}{path}{label}: the answer is not a pfrest envelope")
        return payload.get("data")

    def version(self, minimum: str = MIN_VERSION) -> str:
        data = self.call("GET", "/system/restapi/version", what="REST API version")
        current = str((data or {}).get("current_version") or "")
        if parse_version(current, name="REST API version") < parse_version(minimum):
            raise PfsenseError(
                f"pfsense_gateway_min_api_version: the firewall runs REST API {current}, older "
                f"than {minimum}, the contract these modules follow; upgrade the firewall's "
                "pfSense-pkg-RESTAPI package"
            )
        return current

    def list(self, kind: Kind) -> list[Obj]:
        data = self.call("GET", kind.plural, what=f"list {kind.name}")
        if not isinstance(data, list):
            raise PfsenseError(f"GET {API}{kind.plural}: expected a list of {kind.name}")
        return [dict(item) for item in data]


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class Kind:
    """One kind of pfSense object the reconciler manages."""

    name: str
    path: str
    plural: str
    descr: str  # the field that carries the owner marker
    key: str  # identity of an object among those of its kind
    fields: tuple[str, ...]  # every field we ever send (used to re-create on rollback)
    firewall: bool = False  # staged until POST /firewall/apply
    ordered: bool = False  # position matters (rules): a changed order re-creates ours
    refs: tuple[tuple[str, str], ...] = ()  # (field, kind) whose values name objects of kind


KINDS: tuple[Kind, ...] = (
    Kind(
        "ca",
        "/system/certificate_authority",
        "/system/certificate_authorities",
        "descr",
        "descr",
        ("descr", "crt", "trust", "randomserial"),
    ),
    Kind(
        "certificate",
        "/system/certificate",
        "/system/certificates",
        "descr",
        "descr",
        ("descr", "crt", "prv", "type"),
    ),
    Kind(
        "crl", "/system/crl", "/system/crls", "descr", "descr", ("descr", "caref", "method", "text")
    ),
    Kind(
        "openvpn_server",
        "/vpn/openvpn/server",
        "/vpn/openvpn/servers",
        "description",
        "description",
        (
            "description",
            "disable",
            "mode",
            "dev_mode",
            "protocol",
            "interface",
            "local_port",
            "use_tls",
            "tls",
            "tls_type",
            "caref",
            "certref",
            "dh_length",
            "ecdh_curve",
            "data_ciphers",
            "data_ciphers_fallback",
            "digest",
            "remote_cert_tls",
            "tunnel_network",
            "local_network",
            "maxclients",
            "topology",
            "allow_compression",
            "client2client",
            "duplicate_cn",
            "ping_method",
            "keepalive_interval",
            "keepalive_timeout",
            "custom_options",
            "verbosity_level",
            "create_gw",
        ),
    ),
    Kind(
        "openvpn_cso",
        "/vpn/openvpn/cso",
        "/vpn/openvpn/csos",
        "description",
        "common_name",
        (
            "common_name",
            "description",
            "disable",
            "block",
            "server_list",
            "tunnel_network",
            "push_reset",
            "gwredir",
        ),
    ),
    Kind(
        "limiter",
        "/firewall/traffic_shaper/limiter",
        "/firewall/traffic_shaper/limiters",
        "description",
        "name",
        ("name", "enabled", "mask", "maskbits", "description", "aqm", "sched", "bandwidth"),
        firewall=True,
    ),
    Kind(
        "alias",
        "/firewall/alias",
        "/firewall/aliases",
        "descr",
        "name",
        ("name", "type", "descr", "address", "detail"),
        firewall=True,
    ),
    Kind(
        "rule",
        "/firewall/rule",
        "/firewall/rules",
        "descr",
        "descr",
        (
            "type",
            "interface",
            "ipprotocol",
            "protocol",
            "source",
            "destination",
            "destination_port",
            "descr",
            "disabled",
            "log",
            "dnpipe",
            "pdnpipe",
            "statetype",
        ),
        firewall=True,
        ordered=True,
        refs=(("dnpipe", "limiter"), ("pdnpipe", "limiter")),
    ),
    Kind(
        "nat_outbound",
        "/firewall/nat/outbound/mapping",
        "/firewall/nat/outbound/mappings",
        "descr",
        "descr",
        ("interface", "protocol", "disabled", "nonat", "source", "destination", "target", "descr"),
        firewall=True,
    ),
)
KIND_BY_NAME = {kind.name: kind for kind in KINDS}
NAT_MODE_PATH = "/firewall/nat/outbound/mode"


# --------------------------------------------------------------------------- pure planning


@dataclass(frozen=True)
class Ref:
    """A field value that names another desired object: resolved to its server-side id."""

    kind: str
    key: str
    attr: str  # refid, vpnid, ...

    def placeholder(self) -> str:
        return f"<{self.attr} of new {self.kind} {self.key}>"


def decode_refs(value: Any, secrets: Mapping[str, str] | None = None) -> Any:
    """Module input: ``{"__ref__": [kind, key, attr]}`` becomes a Ref and
    ``{"__secret__": name}`` the secret of that name (passed separately, never logged)."""
    if isinstance(value, dict):
        if set(value) == {"__ref__"}:
            kind, key, attr = value["__ref__"]
            return Ref(str(kind), str(key), str(attr))
        if set(value) == {"__secret__"}:
            name = str(value["__secret__"])
            if not secrets or name not in secrets:
                raise PfsenseError(f"secrets: no secret named {name!r} was given")
            return secrets[name]
        return {k: decode_refs(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_refs(v, secrets) for v in value]
    return value


def resolve(value: Any, lookup: Callable[[Ref], Any | None]) -> tuple[Any, bool]:
    """Replace Refs by the referenced id; False when some reference is not there yet."""
    if isinstance(value, Ref):
        found = lookup(value)
        return (value.placeholder(), False) if found is None else (found, True)
    if isinstance(value, dict):
        ok = True
        out: Obj = {}
        for k, v in value.items():
            out[k], good = resolve(v, lookup)
            ok = ok and good
        return out, ok
    if isinstance(value, list):
        items = [resolve(v, lookup) for v in value]
        return [v for v, _ in items], all(good for _, good in items)
    return value, True


def same(desired: Any, current: Any) -> bool:
    """Does the server's value carry what we asked for? Extra server-side fields are ignored."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(
            k in current and same(v, current[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(desired) == len(current)
            and all(same(d, current[i]) for i, d in enumerate(desired))
        )
    if isinstance(desired, bool) or isinstance(current, bool):
        return desired is current or desired == current
    if desired is None or current is None:
        return desired is current
    return desired == current or str(desired) == str(current)


def changed_fields(desired: Obj, current: Obj) -> dict[str, Any]:
    """The desired fields whose current value differs."""
    return {k: v for k, v in desired.items() if k not in current or not same(v, current[k])}


def owned(kind: Kind, obj: Mapping[str, Any], marker: str) -> bool:
    return str(obj.get(kind.descr) or "").startswith(marker)


def redact(obj: Mapping[str, Any]) -> Obj:
    return {k: (REDACTED if k in SECRET_FIELDS and v else v) for k, v in obj.items()}


def _label(kind: Kind, obj: Mapping[str, Any]) -> str:
    return f"{kind.name} {obj.get(kind.key)!r} (id {obj.get('id')})"


def find_conflicts(
    kind: Kind,
    desired: Sequence[Obj],
    current: Sequence[Obj],
    marker: str,
    owned_names: Mapping[str, set[str]],
) -> list[str]:
    """Objects made by someone else that would clash with ours; each message names one."""
    problems = []
    wanted = {str(obj[kind.key]) for obj in desired}
    for obj in current:
        if owned(kind, obj, marker):
            continue
        if str(obj.get(kind.key)) in wanted:
            problems.append(
                f"{_label(kind, obj)} exists but is not managed by this grid (its "
                f"{kind.descr} does not start with {marker!r}); rename or delete it by hand"
            )
        for ref_field, ref_kind in kind.refs:
            if str(obj.get(ref_field) or "") in owned_names.get(ref_kind, set()):
                problems.append(
                    f"{_label(kind, obj)} {kind.descr} {obj.get(kind.descr)!r} uses the grid's "
                    f"{ref_kind} {obj.get(ref_field)!r} in {ref_field}, but is not managed by "
                    "this grid; remove it or point it at another limiter"
                )
    return problems


@dataclass
class Plan:
    """What one kind needs: creations (in order), patches and deletions of our objects."""

    kind: Kind
    create: list[Obj] = field(default_factory=list)
    patch: list[tuple[Obj, Obj]] = field(default_factory=list)  # (current, changed fields)
    delete: list[Obj] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.create or self.patch or self.delete)


def plan_kind(kind: Kind, desired: Sequence[Obj], current: Sequence[Obj], marker: str) -> Plan:
    """Compare our current objects with the desired ones (values already resolved)."""
    plan = Plan(kind)
    ours = [obj for obj in current if owned(kind, obj, marker)]
    by_key: dict[str, Obj] = {}
    for obj in ours:
        key = str(obj.get(kind.key))
        if key in by_key:  # a duplicate of ours (an interrupted run): the later one goes
            plan.delete.append(obj)
        else:
            by_key[key] = obj
    keys = [str(obj[kind.key]) for obj in desired]
    current_order = [k for k in (str(o.get(kind.key)) for o in ours) if k in by_key]
    if kind.ordered and current_order != keys and any(k in by_key for k in keys):
        # Position decides which rule matches first: re-create all of ours, in order.
        plan.delete.extend(by_key.values())
        plan.create.extend(desired)
        return plan
    for obj in desired:
        cur = by_key.pop(str(obj[kind.key]), None)
        if cur is None:
            plan.create.append(obj)
        else:
            diff = changed_fields(obj, cur)
            if diff:
                plan.patch.append((cur, diff))
    plan.delete.extend(by_key.values())
    return plan


# --------------------------------------------------------------------------- reconciler


@dataclass
class Result:
    changed: bool = False
    applied: bool = False
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    summary: dict[str, dict[str, int]] = field(default_factory=dict)
    version: str = ""
    requests: int = 0


class Reconciler:
    """Bring the owned objects of every kind to the desired state, staged, verified, applied."""

    def __init__(
        self,
        client: PfsenseClient,
        marker: str,
        *,
        check_mode: bool = False,
        min_version: str = MIN_VERSION,
        nat_mode: str | None = "hybrid",
    ) -> None:
        if not marker:
            raise PfsenseError("pfsense_gateway_owner: empty; it marks the objects this grid owns")
        self.client = client
        self.marker = marker
        self.check_mode = check_mode
        self.min_version = min_version
        self.nat_mode = nat_mode
        self.state: dict[str, list[Obj]] = {}
        self.journal: list[tuple[str, Kind, Obj]] = []  # (action, kind, before/after object)

    # -- reading
    def _lookup(self, ref: Ref) -> Any | None:
        kind = KIND_BY_NAME[ref.kind]
        for obj in self.state.get(ref.kind, []):
            if owned(kind, obj, self.marker) and str(obj.get(kind.key)) == ref.key:
                return str(obj[ref.attr]) if obj.get(ref.attr) is not None else None
        return None

    def _read(self, kind: Kind) -> list[Obj]:
        self.state[kind.name] = self.client.list(kind)
        return self.state[kind.name]

    # -- entry point
    def run(self, desired: Mapping[str, Sequence[Obj]]) -> Result:
        unknown = sorted(set(desired) - set(KIND_BY_NAME))
        if unknown:
            raise PfsenseError(f"objects: unknown kinds {unknown}; known: {sorted(KIND_BY_NAME)}")
        result = Result(version=self.client.version(self.min_version))
        kinds = [k for k in KINDS if k.name in desired]
        self._check_desired(kinds, desired)
        for kind in kinds:
            self._read(kind)
        nat = (
            self.client.call("GET", NAT_MODE_PATH, what="outbound NAT mode")
            if (self.nat_mode and "nat_outbound" in desired)
            else None
        )
        # 1. Every conflict is found before anything is written.
        owned_names = {k.name: {str(o[k.key]) for o in desired[k.name]} for k in kinds}
        problems = []
        for kind in kinds:
            problems += find_conflicts(
                kind, desired[kind.name], self.state[kind.name], self.marker, owned_names
            )
        if problems:
            raise PfsenseError(
                "conflicting objects on the firewall, nothing changed: " + "; ".join(problems)
            )
        # 2. Plan everything (references to objects still to be created stay unresolved).
        plans = {k.name: self._plan(k, desired[k.name]) for k in kinds}
        mode_change = bool(
            nat
            and nat.get("mode") not in ("hybrid", "advanced")
            and any(desired.get("nat_outbound", []))
        )
        for kind in kinds:
            plan = plans[kind.name]
            result.summary[kind.name] = {
                "create": len(plan.create),
                "patch": len(plan.patch),
                "delete": len(plan.delete),
            }
            result.before += self._describe(plan, before=True)
            result.after += self._describe(plan, before=False)
        if mode_change:
            result.before.append(f"outbound NAT mode: {nat.get('mode') if nat else None}")
            result.after.append(f"outbound NAT mode: {self.nat_mode}")
        result.changed = mode_change or any(p.changed for p in plans.values())
        if not result.changed or self.check_mode:
            result.requests = self.client.requests
            return result
        # 3. Stage, verify, apply; undo our own writes on any failure, and never apply then.
        try:
            firewall_changed = self._write(kinds, desired)
            if mode_change:
                before = {"mode": nat.get("mode") if nat else "automatic"}
                self.client.call(
                    "PATCH", NAT_MODE_PATH, body={"mode": self.nat_mode}, what="outbound NAT mode"
                )
                self.journal.append(("mode", KINDS[0], before))
                firewall_changed = True
            self._verify(kinds, desired)
            if firewall_changed:
                self.client.call("POST", "/firewall/apply", body={}, what="apply the firewall")
                result.applied = True
        except PfsenseError as exc:
            undo = self._rollback()
            raise PfsenseError(f"{exc}. {undo}") from None
        result.requests = self.client.requests
        return result

    def _check_desired(self, kinds: Iterable[Kind], desired: Mapping[str, Sequence[Obj]]) -> None:
        for kind in kinds:
            seen: set[str] = set()
            for obj in desired[kind.name]:
                key = obj.get(kind.key)
                if key is None:
                    raise PfsenseError(f"objects.{kind.name}: an object has no {kind.key}")
                if str(key) in seen:
                    raise PfsenseError(f"objects.{kind.name}: {key!r} appears twice")
                seen.add(str(key))
                if not str(obj.get(kind.descr) or "").startswith(self.marker):
                    raise PfsenseError(
                        f"objects.{kind.name} {key!r}: {kind.descr} must start with {self.marker!r}"
                    )

    def _plan(self, kind: Kind, desired: Sequence[Obj]) -> Plan:
        resolved = [resolve(obj, self._lookup)[0] for obj in desired]
        return plan_kind(kind, resolved, self.state[kind.name], self.marker)

    @staticmethod
    def _describe(plan: Plan, *, before: bool) -> list[str]:
        kind, lines = plan.kind, []
        for obj in plan.create:
            if not before:
                lines.append(
                    f"{kind.name} {obj[kind.key]}: {json.dumps(redact(obj), sort_keys=True)}"
                )
        for cur, diff in plan.patch:
            shown = {k: cur.get(k) for k in diff} if before else diff
            lines.append(
                f"{kind.name} {cur[kind.key]}: {json.dumps(redact(shown), sort_keys=True)}"
            )
        for obj in plan.delete:
            if before:
                lines.append(f"{kind.name} {obj.get(kind.key)}: (present)")
        return lines

    def _write(self, kinds: Sequence[Kind], desired: Mapping[str, Sequence[Obj]]) -> bool:
        firewall_changed = False
        deletions: list[tuple[Kind, list[Obj]]] = []
        for kind in kinds:  # creations and patches in dependency order
            plan = self._plan(kind, desired[kind.name])
            if kind.ordered and plan.delete and plan.create:
                self._delete(kind, plan.delete)
                plan.delete = []
            for cur, diff in plan.patch:
                body = {"id": cur["id"], **diff}
                self.client.call("PATCH", kind.path, body=body, what=_label(kind, cur))
                self.journal.append(
                    (
                        "patch",
                        kind,
                        {
                            "id": cur["id"],
                            kind.key: cur.get(kind.key),
                            **{k: cur.get(k) for k in diff},
                        },
                    )
                )
            for obj in plan.create:
                created = self.client.call(
                    "POST", kind.path, body=obj, what=f"{kind.name} {obj[kind.key]!r}"
                )
                self.journal.append(("create", kind, dict(created or obj)))
            if plan.delete:
                deletions.append((kind, plan.delete))
            firewall_changed = firewall_changed or (kind.firewall and plan.changed)
            if plan.changed:
                self._read(kind)
        for kind, objs in reversed(deletions):  # deletions in reverse dependency order
            self._delete(kind, objs)
            self._read(kind)
        return firewall_changed

    def _delete(self, kind: Kind, objs: Sequence[Obj]) -> None:
        # pfSense ids are positions in a list: delete from the end so the others keep theirs.
        for obj in sorted(objs, key=lambda o: int(o["id"]), reverse=True):
            self.client.call("DELETE", kind.path, query={"id": obj["id"]}, what=_label(kind, obj))
            self.journal.append(("delete", kind, obj))

    def _verify(self, kinds: Sequence[Kind], desired: Mapping[str, Sequence[Obj]]) -> None:
        for kind in kinds:
            self._read(kind)
        for kind in kinds:
            plan = self._plan(kind, desired[kind.name])
            if plan.changed:
                what = [f"create {o[kind.key]}" for o in plan.create]
                what += [f"{c[kind.key]}: {sorted(d)}" for c, d in plan.patch]
                what += [f"remove {o.get(kind.key)}" for o in plan.delete]
                raise PfsenseError(
                    f"verification of the staged {kind.name} objects failed "
                    f"({', '.join(what)[:400]})"
                )

    def _rollback(self) -> str:
        errors = []
        for action, kind, obj in reversed(self.journal):
            try:
                if action == "mode":
                    self.client.call("PATCH", NAT_MODE_PATH, body=obj, what="undo NAT mode")
                elif action == "patch":
                    current = self._find(kind, obj)
                    if current is not None:
                        body = {k: v for k, v in obj.items() if k != "id" and v is not None}
                        body["id"] = current["id"]
                        self.client.call(
                            "PATCH", kind.path, body=body, what="undo " + _label(kind, obj)
                        )
                elif action == "create":
                    current = self._find(kind, obj)
                    if current is not None:
                        self.client.call(
                            "DELETE",
                            kind.path,
                            query={"id": current["id"]},
                            what="undo " + _label(kind, obj),
                        )
                else:  # re-create what we deleted
                    body = {k: copy.deepcopy(obj[k]) for k in kind.fields if k in obj}
                    self.client.call("POST", kind.path, body=body, what="undo " + _label(kind, obj))
            except PfsenseError as exc:
                errors.append(str(exc))
        self.journal.clear()
        if errors:
            return (
                "Undoing the staged changes also failed, fix by hand: "
                + "; ".join(errors)
                + ". The firewall was not applied."
            )
        return (
            "Staged changes were undone and the firewall was not applied: it keeps its "
            "previous applied state."
        )

    def _find(self, kind: Kind, obj: Mapping[str, Any]) -> Obj | None:
        for cur in self._read(kind):
            if str(cur.get(kind.key)) == str(obj.get(kind.key)) and owned(kind, cur, self.marker):
                return cur
        return None


def client_from_params(
    params: Mapping[str, Any], transport: Transport | None = None
) -> PfsenseClient:
    """Build the client from the modules' common options."""
    return PfsenseClient(
        str(params["url"]),
        str(params["api_key"]),
        transport
        or OpenUrlTransport(
            validate_certs=bool(params.get("validate_certs", True)),
            ca_path=params.get("ca_path") or None,
            timeout=float(params.get("timeout") or 30),
        ),
    )


#: The options every pfsense_* module takes (merged into each module's argument_spec).
COMMON_ARGS: dict[str, dict[str, Any]] = {
    "url": {"type": "str", "required": True},
    "api_key": {"type": "str", "required": True, "no_log": True},
    "validate_certs": {"type": "bool", "default": True},
    "ca_path": {"type": "path"},
    "timeout": {"type": "int", "default": 30},
    "min_api_version": {"type": "str", "default": MIN_VERSION},
}
