"""Sign an IDTOKEN with HTCondor's own code, for tests/condor/test_condor_token_htcondor.py.

Calls ``Condor_Auth_Passwd::generate_token`` (what condor_token_create runs) in the
libcondor_utils that the htcondor wheel ships, with the key file given in a password directory
and the trust domain in HTCondor's configuration (both from the environment, as ``_CONDOR_*``).
Run as its own process (it calls C++ through ctypes): argv key_dir key_id identity level...;
prints the token on stdout.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path


class _StdString(ctypes.Structure):
    # libstdc++'s std::__cxx11::basic_string: data pointer, length, then the small buffer or
    # the capacity. Every string here points at a ctypes buffer kept alive in _KEEP.
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t), ("buf", ctypes.c_char * 16)]


_KEEP: list[object] = []
# Condor_Auth_Passwd::generate_token(const std::string& identity, const std::string& key_id,
#     const std::vector<std::string>& authz, long lifetime, std::string& token, int ident,
#     CondorError* err), as condor_token_create calls it.
_GENERATE_SYMBOL = (
    "_ZN18Condor_Auth_Passwd14generate_tokenERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"
    "S7_RKSt6vectorIS5_SaIS5_EElRS5_iP11CondorError"
)


def _set(target: _StdString, value: bytes) -> None:
    data = ctypes.create_string_buffer(value, len(value) + 1)
    _KEEP.append(data)
    target.ptr = ctypes.addressof(data)
    target.len = len(value)
    target.buf = len(value).to_bytes(8, "little") + b"\0" * 8


def main(argv: list[str]) -> int:
    key_dir, key_id, identity, *levels = argv
    os.environ["CONDOR_CONFIG"] = "/dev/null"
    os.environ["_CONDOR_SEC_PASSWORD_DIRECTORY"] = key_dir
    os.environ["_CONDOR_SEC_TOKEN_POOL_SIGNING_KEY_FILE"] = str(Path(key_dir) / "POOL")
    import htcondor2  # noqa: PLC0415  (reads the configuration above)

    libs = Path(htcondor2.__file__).resolve().parents[1] / "htcondor.libs"
    (path,) = libs.glob("libcondor_utils_*.so")
    lib = ctypes.CDLL(str(path))
    generate = getattr(lib, _GENERATE_SYMBOL)
    generate.restype = ctypes.c_bool
    ident, kid, token = _StdString(), _StdString(), _StdString()
    _set(ident, identity.encode())
    _set(kid, key_id.encode())
    # The output string starts empty in its own small buffer, as a C++ std::string does:
    # HTCondor assigns to it, which frees a heap buffer but never the small one.
    token.ptr = ctypes.addressof(token) + _StdString.buf.offset
    token.len = 0
    strings = (_StdString * len(levels))()
    for i, level in enumerate(levels):
        _set(strings[i], level.encode())
    start = ctypes.addressof(strings)
    end = start + len(levels) * ctypes.sizeof(_StdString)
    vector = (ctypes.c_void_p * 3)(start, end, end)  # std::vector: begin, end, end of storage
    error = ctypes.create_string_buffer(1024)  # room for a CondorError, unused on success
    if not generate(
        ctypes.byref(ident),
        ctypes.byref(kid),
        ctypes.byref(vector),
        ctypes.c_long(3600),
        ctypes.byref(token),
        ctypes.c_int(0),
        error,
    ):
        sys.stderr.write("generate_token failed\n")
        return 1
    sys.stdout.write(ctypes.string_at(token.ptr, token.len).decode("ascii") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
