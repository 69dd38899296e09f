"""The image store's key, held for the agent's service account only.

- Linux: a 32-byte key file created with mode 0600 (``O_EXCL``, never widened). A key file
  that group or others can read, or that another user owns, is refused.
- Windows: the key is protected with DPAPI (``CryptProtectData``, user scope) under the
  service account, via ctypes; only that account can unprotect the blob.

Both derive sub-keys with HMAC-SHA256 (``subkey``), so the image key, the disk encryption
password and the credential wrapping key are separate.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import stat
import sys
from abc import ABC, abstractmethod
from typing import Any

from cvmc.agent.adapters.files import write_private

__all__ = ["DpapiKeyStore", "FileKeyStore", "KeyStore", "KeyStoreError", "default_keystore"]

KEY_BYTES = 32
CRYPTPROTECT_UI_FORBIDDEN = 0x1


class KeyStoreError(RuntimeError):
    """The key cannot be loaded safely."""


class KeyStore(ABC):
    @abstractmethod
    def master_key(self) -> bytes:
        """The 32-byte master key (created on first use)."""

    def subkey(self, purpose: str) -> bytes:
        """A key for one purpose, derived from the master key."""
        return hmac.new(self.master_key(), purpose.encode(), hashlib.sha256).digest()


class FileKeyStore(KeyStore):
    """A 0600 key file (Linux)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._key: bytes | None = None

    def master_key(self) -> bytes:
        if self._key is None:
            if not os.path.exists(self.path):
                write_private(self.path, os.urandom(KEY_BYTES), replace=False)
            self._key = self._load()
        return self._key

    def _load(self) -> bytes:
        info = os.stat(self.path)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyStoreError(
                f"{self.path}: mode {stat.filemode(info.st_mode)} lets others read the image key; "
                "it must be 0600 (chmod 600) and owned by the agent's service account"
            )
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise KeyStoreError(f"{self.path}: owned by uid {info.st_uid}, not by the agent")
        with open(self.path, "rb") as fh:
            key = fh.read()
        if len(key) != KEY_BYTES:
            raise KeyStoreError(f"{self.path}: holds {len(key)} bytes, not a {KEY_BYTES}-byte key")
        return key


class DataBlob(ctypes.Structure):
    """DPAPI's DATA_BLOB: ``{DWORD cbData; BYTE *pbData;}``."""

    _fields_ = (("cbData", ctypes.c_uint32), ("pbData", ctypes.POINTER(ctypes.c_char)))


class DpapiKeyStore(KeyStore):
    """The key as a DPAPI blob in a file (Windows, user scope: the service account)."""

    def __init__(self, path: str, crypt32: object = None, kernel32: object = None) -> None:
        self.path = path
        self._crypt32 = crypt32
        self._kernel32 = kernel32
        self._key: bytes | None = None

    def _libs(self) -> tuple[Any, Any]:
        if self._crypt32 is None:  # pragma: no cover - Windows only
            windll = ctypes.windll  # type: ignore[attr-defined,unused-ignore]
            self._crypt32, self._kernel32 = windll.crypt32, windll.kernel32
        return self._crypt32, self._kernel32

    def _call(self, func_name: str, data: bytes) -> bytes:
        crypt32, kernel32 = self._libs()
        buffer = ctypes.create_string_buffer(data, len(data))
        blob_in = DataBlob(len(data), ctypes.cast(buffer, ctypes.POINTER(ctypes.c_char)))
        blob_out = DataBlob()
        func = getattr(crypt32, func_name)
        if func_name == "CryptProtectData":
            ok = func(
                ctypes.byref(blob_in),
                "cvmc image store key",
                None,
                None,
                None,
                CRYPTPROTECT_UI_FORBIDDEN,
                ctypes.byref(blob_out),
            )
        else:
            ok = func(
                ctypes.byref(blob_in),
                None,
                None,
                None,
                None,
                CRYPTPROTECT_UI_FORBIDDEN,
                ctypes.byref(blob_out),
            )
        if not ok:
            raise KeyStoreError(f"{func_name} failed (is this the agent's service account?)")
        try:
            return ctypes.string_at(blob_out.pbData, blob_out.cbData)
        finally:
            kernel32.LocalFree(blob_out.pbData)

    def protect(self, data: bytes) -> bytes:
        return self._call("CryptProtectData", data)

    def unprotect(self, blob: bytes) -> bytes:
        return self._call("CryptUnprotectData", blob)

    def master_key(self) -> bytes:
        if self._key is None:
            if not os.path.exists(self.path):
                write_private(self.path, self.protect(os.urandom(KEY_BYTES)), replace=False)
            with open(self.path, "rb") as fh:
                key = self.unprotect(fh.read())
            if len(key) != KEY_BYTES:
                raise KeyStoreError(f"{self.path}: the DPAPI blob does not hold a key")
            self._key = key
        return self._key


def default_keystore(state_dir: str) -> KeyStore:
    """DPAPI on Windows, a 0600 key file elsewhere."""
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return DpapiKeyStore(os.path.join(state_dir, "keys", "store.dpapi"))
    return FileKeyStore(os.path.join(state_dir, "keys", "store.key"))
