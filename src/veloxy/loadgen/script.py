"""--script FILE.py: per-request Python hooks, what wrk does with Lua.

Why Python and these three names: users of wrk know `request()`, `response()` and `setup()`;
here they are plain Python functions in a file, run with `runpy` (no import path games). A
script may define any of:

    def setup(ctx): ...                       # once per connection, before its first request
    def request(ctx): return method, path, headers, body
    def response(status, headers, body, ctx): ...   # return False to count a rejection

The trailing `ctx` parameter is optional in each: it is a dict per connection, holding "id"
(the connection's number across all processes) and "process", where a script may keep state
(a session token from setup(), a counter). `request()` may return a tuple (method, path) up to
(method, path, headers, body), or a dict with those keys; headers are a dict or (name, value)
pairs, the body bytes or str (UTF-8). Host and Content-Length are added as without a script.
`response()` gets the status, the end-to-end headers as a dict with lowercase names (framing
and hop-by-hop fields are consumed by the parser), and the whole body as bytes; defining it
makes the generator keep every body, which costs time: define it only when needed.

Checked before the run: the file loads, its hooks take the right number of parameters, and
setup() then request() are called once on a probe context, so a script that raises stops the
run before it starts with a one-line message (exit 2). A hook that raises during the run stops
the run the same way.
"""

from __future__ import annotations

import inspect
import runpy
from collections.abc import Callable
from typing import Any

from veloxy.h1.head import ResponseHead
from veloxy.loadgen.settings import BenchInputError, build_request, check_method, parse_header


class Script:
    def __init__(self, path: str, host_header: str, close: bool,
                 default_method: str = "GET") -> None:
        self.path = path
        self.host_header = host_header
        self.close = close
        self.default_method = default_method
        try:
            namespace = runpy.run_path(path, run_name="__veloxy_script__")
        except FileNotFoundError:
            raise BenchInputError(f"script {path}: no such file") from None
        except SyntaxError as exc:
            raise BenchInputError(f"script {path}: line {exc.lineno}: {exc.msg}") from None
        except Exception as exc:
            raise BenchInputError(f"script {path} raised {type(exc).__name__}: {exc}") from None
        self.request, self._request_ctx = self._hook(namespace, "request", 0)
        self.response, self._response_ctx = self._hook(namespace, "response", 3)
        self.setup, self._setup_ctx = self._hook(namespace, "setup", 0)
        if self.request is None and self.response is None and self.setup is None:
            raise BenchInputError(f"script {path} defines none of request(), response(), "
                                  "setup()")

    def _hook(self, namespace: dict[str, Any], name: str,
              required: int) -> tuple[Callable[..., Any] | None, bool]:
        func = namespace.get(name)
        if func is None:
            return None, False
        if not callable(func):
            raise BenchInputError(f"script {self.path}: {name} is not a function")
        try:
            params = [p for p in inspect.signature(func).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            return func, False
        if len(params) not in (required, required + 1):
            wanted = f"{required} or {required + 1}"
            raise BenchInputError(f"script {self.path}: {name}() must take {wanted} "
                                  f"parameters, it takes {len(params)}")
        return func, len(params) == required + 1

    # -- calls ---------------------------------------------------------------------------------

    def call_setup(self, ctx: dict[str, object]) -> None:
        if self.setup is not None:
            if self._setup_ctx:
                self.setup(ctx)
            else:
                self.setup()

    def request_bytes(self, ctx: dict[str, object]) -> bytes:
        assert self.request is not None
        spec = self.request(ctx) if self._request_ctx else self.request()
        method, path, headers, body = self._unpack(spec)
        return build_request(method, path, self.host_header, headers, body, self.close)

    def call_response(self, head: ResponseHead, body: bytes, ctx: dict[str, object]) -> object:
        assert self.response is not None
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in head.headers}
        if self._response_ctx:
            return self.response(head.status, headers, body, ctx)
        return self.response(head.status, headers, body)

    def describe_error(self, where: str, exc: BaseException) -> str:
        if isinstance(exc, BenchInputError):
            return str(exc)
        return f"script {self.path}: {where}() raised {type(exc).__name__}: {exc}"

    def probe(self) -> None:
        """Run setup() and request() once on a probe context; BenchInputError if they fail."""
        ctx: dict[str, object] = {"id": -1, "process": -1}
        try:
            self.call_setup(ctx)
        except BenchInputError:
            raise
        except Exception as exc:
            raise BenchInputError(self.describe_error("setup", exc)) from None
        if self.request is not None:
            try:
                self.request_bytes(ctx)
            except BenchInputError:
                raise
            except Exception as exc:
                raise BenchInputError(self.describe_error("request", exc)) from None

    # -- request() results -----------------------------------------------------------------------

    def _unpack(self, spec: object) -> tuple[str, str, list[tuple[str, str]], bytes | None]:
        where = f"script {self.path}: request()"
        if isinstance(spec, dict):
            method = spec.get("method", self.default_method)
            path = spec.get("path", "/")
            headers = spec.get("headers")
            body = spec.get("body")
        elif isinstance(spec, tuple | list) and 2 <= len(spec) <= 4:
            method, path, headers, body = (*spec, None, None)[:4]
        else:
            raise BenchInputError(f"{where} must return (method, path[, headers[, body]]) "
                                  f"or a dict, got {type(spec).__name__}")
        if not isinstance(method, str) or not isinstance(path, str):
            raise BenchInputError(f"{where}: method and path must be str")
        check_method(method)
        if not path or any(ord(ch) <= 32 or ord(ch) >= 127 for ch in path):
            raise BenchInputError(f"{where}: bad path {path!r} (percent-encode it)")
        pairs: list[tuple[str, str]] = []
        if headers:
            items = headers.items() if isinstance(headers, dict) else headers
            for name, value in items:
                pairs.append(parse_header(f"{name}: {value}"))
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif body is not None and not isinstance(body, bytes | bytearray):
            raise BenchInputError(f"{where}: body must be bytes, str or None")
        return method, path, pairs, bytes(body) if body is not None else None
