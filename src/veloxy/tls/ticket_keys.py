"""A server context's TLS session-ticket key, read and set through libssl (ctypes).

Why: OpenSSL seals session tickets with a random key made when a context is created. Forked
workers inherit their supervisor's contexts, hence its key, and resume each other's tickets;
spawned workers (`workers_mode: spawn`) make their own contexts, so without this a ticket
would only resume on the worker that issued it. Python's ssl has no call for the key
(no SSL_CTX_set_tlsext_ticket_keys), so this reaches libssl's SSL_CTX_ctrl with the
SSL_CTX pointer of the SSLContext object.

Guarded, because it relies on CPython's layout of the context object (`SSL_CTX *ctx` right
after PyObject_HEAD in Modules/_ssl.c, unchanged from 3.7 to 3.13): the pointer is used only
if SSL_CTX_get_options on it gives back the context's own `options`, after options were
changed to a value that identifies it, and the key is only reported as set if reading it
back gives the same bytes. Anything else (another Python, another layout, libssl not
found) returns None/False: the caller keeps OpenSSL's own key, and tickets resume per
worker as before.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from functools import cache

#: SSL_CTX_get/set_tlsext_ticket_keys: 16 bytes of key name, 32 of HMAC key, 32 of AES key.
KEY_BYTES = 80
_GET_KEYS = 58  # SSL_CTRL_GET_TLSEXT_TICKET_KEYS
_SET_KEYS = 59  # SSL_CTRL_SET_TLSEXT_TICKET_KEYS
_PROBE_OPTION = ssl.OP_NO_TICKET  # flipped once to prove the pointer names this context


@cache
def _libssl() -> ctypes.CDLL | None:
    """The libssl the ssl module is linked with (its handle resolves _ssl's dependencies)."""
    if sys.implementation.name != "cpython":
        return None
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        ctrl, get_options = lib.SSL_CTX_ctrl, lib.SSL_CTX_get_options
    except (OSError, AttributeError):  # e.g. Windows: the .pyd does not export libssl's names
        return None
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    ctrl.restype = ctypes.c_long
    get_options.argtypes = [ctypes.c_void_p]
    get_options.restype = ctypes.c_uint64
    return lib


def _ssl_ctx(context: ssl.SSLContext) -> int | None:
    """The SSL_CTX pointer of `context`, or None when it cannot be trusted."""
    lib = _libssl()
    if lib is None or type(context).__basicsize__ < object.__basicsize__ + ctypes.sizeof(
            ctypes.c_void_p):
        return None
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer:
        return None
    before = context.options
    try:
        if lib.SSL_CTX_get_options(pointer) != before:
            return None
        context.options = before ^ _PROBE_OPTION  # the pointer must follow this change
        if lib.SSL_CTX_get_options(pointer) != context.options:
            return None
    finally:
        context.options = before
    return pointer


def get_ticket_keys(context: ssl.SSLContext) -> bytes | None:
    """The context's ticket key (KEY_BYTES), or None if it cannot be read here."""
    pointer = _ssl_ctx(context)
    if pointer is None:
        return None
    buffer = ctypes.create_string_buffer(KEY_BYTES)
    if _libssl().SSL_CTX_ctrl(pointer, _GET_KEYS, KEY_BYTES, buffer) != 1:  # type: ignore[union-attr]  # _ssl_ctx found it
        return None
    return buffer.raw


def set_ticket_keys(context: ssl.SSLContext, keys: bytes) -> bool:
    """Make `context` seal and open tickets with `keys`; True if it now does."""
    if len(keys) != KEY_BYTES:
        raise ValueError(f"a ticket key is {KEY_BYTES} bytes, got {len(keys)}")
    pointer = _ssl_ctx(context)
    if pointer is None:
        return False
    buffer = ctypes.create_string_buffer(keys, KEY_BYTES)
    if _libssl().SSL_CTX_ctrl(pointer, _SET_KEYS, KEY_BYTES, buffer) != 1:  # type: ignore[union-attr]  # _ssl_ctx found it
        return False
    return get_ticket_keys(context) == keys
