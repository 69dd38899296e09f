"""The coordinator client: HTTPS, one-time-token enrolment, HMAC-signed requests with a
persisted, strictly increasing sequence number (docs/coordinator-api.md).

The per-desktop credential is stored encrypted (AES-GCM with a key derived from the store's
master key, which only the service account can read); the sequence number is stored in the
clear, written by temp file and rename before each request goes out, so a crash can skip
numbers but never reuse one.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cvmc import __version__, protocol
from cvmc.agent.adapters.files import write_private
from cvmc.agent.adapters.http_deadline import DeadlineError, HttpStatusError, open_with_deadline
from cvmc.agent.logs import log_event
from cvmc.agent.ports import CoordinatorClient, CoordinatorError

__all__ = ["AgentState", "HttpCoordinator"]
LOG = logging.getLogger("cvmc.agent.coordinator")

MAX_REPLY = 1024 * 1024
DEADLINE_S = 30.0
"""Every call to the coordinator ends within this, however slowly the server answers."""


class AgentState:
    """The desktop's credential (encrypted) and request sequence number."""

    def __init__(self, state_dir: str, key: bytes) -> None:
        self.dir = state_dir
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self._aes = AESGCM(key)
        self._cred = os.path.join(state_dir, "credential.bin")
        self._seq_path = os.path.join(state_dir, "seq.json")
        self._seq = self._load_seq()
        self._seq_unsaved = False

    def _load_seq(self) -> int:
        try:
            with open(self._seq_path, encoding="utf-8") as fh:
                value = json.load(fh).get("seq", 0)
        except (FileNotFoundError, ValueError):
            return 0
        # Out of range, or with no number left above it (damaged, or written by an agent that
        # believed a huge ``last_seq``): start again from 0; the coordinator's 409 names the
        # number to continue above.
        return value if protocol.is_seq(value) and value < protocol.MAX_SEQ else 0

    def _save_seq(self) -> None:
        """Persist the counter. On a full disk, go on from memory: the coordinator refuses any
        number it has seen (the replay protection is its), and after a restart the agent
        recovers from a stale counter (``at_least``). It must keep heartbeating to report
        the full disk and take part in the pool."""
        try:
            write_private(self._seq_path, json.dumps({"seq": self._seq}).encode(), 0o644)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if not self._seq_unsaved:
                log_event(
                    LOG,
                    logging.ERROR,
                    "agent.seq_not_saved",
                    f"the disk is full: {self._seq_path} is not updated ({exc}); the sequence "
                    "number goes on from memory",
                )
            self._seq_unsaved = True
        else:
            self._seq_unsaved = False

    def next_seq(self) -> int:
        self._seq += 1
        self._save_seq()
        return self._seq

    def at_least(self, seq: int) -> None:
        """The coordinator has seen ``seq``: continue above it (never beyond ``MAX_SEQ``, which
        the coordinator would refuse for good)."""
        if not protocol.is_seq(seq):
            raise ValueError(f"sequence number {seq!r} is outside 0..{protocol.MAX_SEQ}")
        if seq > self._seq:
            self._seq = seq
            self._save_seq()

    def credential(self) -> tuple[str, bytes] | None:
        try:
            with open(self._cred, "rb") as fh:
                blob = fh.read()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(self._aes.decrypt(blob[:12], blob[12:], b"cvmc-credential"))
        except (InvalidTag, ValueError):
            return None  # another key, or damaged: enrol again
        return str(data["desktop_id"]), base64.b64decode(data["credential"])

    def save_credential(self, desktop_id: str, credential: bytes) -> None:
        nonce = os.urandom(12)
        plain = json.dumps(
            {"desktop_id": desktop_id, "credential": base64.b64encode(credential).decode()}
        ).encode()
        write_private(self._cred, nonce + self._aes.encrypt(nonce, plain, b"cvmc-credential"))
        self.at_least(0)

    def forget_credential(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._cred)


class HttpCoordinator(CoordinatorClient):
    def __init__(
        self,
        base_url: str,
        *,
        state: AgentState,
        desktop: str,
        platform: str,
        enrol_token_file: str | None,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 15.0,
        deadline_s: float = DEADLINE_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.state = state
        self.desktop = desktop
        self.platform = platform
        self.token_file = enrol_token_file
        self.ssl = ssl_context
        self.timeout = timeout_s
        self.deadline = deadline_s
        self._lock = threading.Lock()

    # -- transport ---------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> Any:  # noqa: ANN401 - JSON
        request = urllib.request.Request(  # noqa: S310 - the config allows https only
            self.base_url + path,
            data=body,
            method=method,
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"cvmc/{__version__}",
                **headers,
            },
        )
        try:
            with open_with_deadline(
                request, timeout_s=self.timeout, deadline_s=self.deadline, context=self.ssl
            ) as response:
                raw = response.read(MAX_REPLY + 1)
        except HttpStatusError as exc:
            raise self._error(exc) from None
        except DeadlineError:
            raise CoordinatorError(
                "unavailable", f"{self.base_url}: no reply within {self.deadline:g} s"
            ) from None
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            raise CoordinatorError("unavailable", f"{self.base_url}: {reason}") from None
        if len(raw) > MAX_REPLY:
            raise CoordinatorError("malformed", f"{path}: reply larger than {MAX_REPLY} bytes")
        try:
            return protocol.loads_json(raw, max_bytes=MAX_REPLY)
        except ValueError as exc:
            raise CoordinatorError("malformed", f"{path}: the reply is not usable: {exc}") from None

    def _error(self, exc: HttpStatusError) -> CoordinatorError:
        try:
            data = protocol.loads_json(exc.body)
            code, message = str(data["error"]), str(data.get("message", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            data, code, message = {}, "unavailable", ""
        last = data.get("last_seq") if isinstance(data, dict) else None
        if last is not None and not protocol.is_seq(last):
            # A sequence the coordinator could never accept: following it would lock this
            # desktop out for good. A protocol error; the agent keeps its own sequence.
            return CoordinatorError(
                "malformed",
                f"HTTP {exc.status} {code}: last_seq is not an integer in 0..{protocol.MAX_SEQ}",
            )
        return CoordinatorError(code, f"HTTP {exc.status} {code}: {message}".strip()[:500], last)

    # -- enrolment --------------------------------------------------------------------------

    def enrol(self) -> str:
        """Exchange the one-time token for a credential; return the desktop id."""
        if not self.token_file or not os.path.exists(self.token_file):
            raise CoordinatorError(
                "invalid_token",
                "not enrolled and no enrolment token (agent.enrol_token_file) to enrol with",
            )
        with open(self.token_file, encoding="utf-8") as fh:
            token = fh.read().strip()
        body = json.dumps(
            {
                "token": token,
                "desktop": self.desktop,
                "agent_version": __version__,
                "platform": self.platform,
            }
        ).encode()
        reply = self._send("POST", protocol.API_PREFIX + "/enrol", body, {})
        try:
            desktop_id = str(reply["desktop_id"])
            credential = base64.b64decode(reply["credential"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise CoordinatorError("malformed", "enrolment reply without a credential") from None
        if len(credential) < 32:
            raise CoordinatorError("malformed", "the credential is shorter than 32 bytes")
        self.state.save_credential(desktop_id, credential)
        with contextlib.suppress(OSError):
            os.unlink(self.token_file)  # one-time: it is spent
        return desktop_id

    # -- signed requests ----------------------------------------------------------------------

    def _signed(self, method: str, path: str, payload: Mapping[str, Any] | None) -> Any:  # noqa: ANN401
        with self._lock:
            for attempt in range(2):
                credential = self.state.credential()
                if credential is None:
                    self.enrol()
                    credential = self.state.credential()
                    assert credential is not None
                desktop_id, secret = credential
                body = b"" if payload is None else json.dumps(payload).encode()
                seq = self.state.next_seq()
                mac = hmac.new(
                    secret,
                    protocol.string_to_sign(method, path, desktop_id, seq, body),
                    hashlib.sha256,
                ).digest()
                headers = {
                    "X-CVMC-Desktop": desktop_id,
                    "X-CVMC-Seq": str(seq),
                    "Authorization": f"{protocol.AUTH_SCHEME} {base64.b64encode(mac).decode()}",
                }
                try:
                    return self._send(method, path, body if payload is not None else None, headers)
                except CoordinatorError as exc:
                    last = exc.last_seq
                    if exc.code == "replayed_sequence" and last is not None and attempt == 0:
                        self.state.at_least(last)
                        continue
                    if exc.code in ("unknown_desktop", "revoked") and attempt == 0:
                        self.state.forget_credential()
                        if self.token_file and os.path.exists(self.token_file):
                            continue
                    raise
        raise CoordinatorError("unavailable", "unreachable")  # pragma: no cover

    def heartbeat(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        reply = self._signed("POST", protocol.API_PREFIX + "/heartbeat", body)
        if not isinstance(reply, Mapping):
            raise CoordinatorError("malformed", "heartbeat reply is not an object")
        return reply

    def catalogue(self) -> Mapping[str, Any]:
        reply = self._signed("GET", protocol.API_PREFIX + "/images", None)
        if not isinstance(reply, Mapping):
            raise CoordinatorError("malformed", "catalogue is not an object")
        return reply
