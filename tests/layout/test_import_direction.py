"""The layers import one way only (docs/design.md): each module is imported in a fresh
interpreter and the veloxy modules it pulled in are checked against the table below."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# package -> packages it may import (besides itself). A module's layer is its first
# component under veloxy ("veloxy.net.client" -> "net").
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "h1": {"errors"},
    "net": {"errors", "h1"},
    "upstream": {"errors", "h1", "net", "config", "tls", "http2", "observe"},
    "proxy": {"errors", "h1", "net", "upstream", "config", "tls", "http2", "observe"},
    "origin": {"errors", "h1", "net", "config"},
    "serving": {"errors", "h1", "net", "config", "tls", "http2"},
    "tls": {"errors", "config"},
    "http2": {"errors", "h1", "net"},
    "loadgen": {"errors", "h1", "net", "config"},
    "lab": {"errors", "h1", "net", "config", "loadgen"},
    "doctor": {"errors", "config", "net"},
    "demo": {"errors", "h1", "net", "config", "loadgen", "lab"},
    # metrics handles, access log, trace context: a leaf that net, upstream and proxy use
    "observe": set(),
    # metrics sources, reload, the admin listener: one serving process's operations side
    "admin": {"errors", "h1", "net", "config", "tls", "http2", "upstream", "proxy", "observe",
              "workers"},
}

PROBE = """
import importlib, json, sys
before = set(sys.modules)
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith("veloxy."))))
"""


def layer(module: str) -> str:
    return module.split(".")[1]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(package: str) -> None:
    module = f"veloxy.{package}"
    out = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True,
                         text=True, check=True).stdout
    imported = {layer(m) for m in json.loads(out)} - {package, "__main__"}
    assert imported <= ALLOWED[package], (
        f"{module} pulls in {sorted(imported - ALLOWED[package])}")


# Packages whose __init__ imports nothing: their modules are probed one by one.
MODULES = ["veloxy.tls.listener", "veloxy.tls.client", "veloxy.http2.connection",
           "veloxy.http2.select", "veloxy.proxy.h2exchange", "veloxy.observe.otel"]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_only_what_its_layer_may(module: str) -> None:
    package = layer(module)
    out = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True,
                         text=True, check=True).stdout
    imported = {layer(m) for m in json.loads(out)} - {package, "__main__"}
    assert imported <= ALLOWED[package], (
        f"{module} pulls in {sorted(imported - ALLOWED[package])}")


def test_opentelemetry_is_imported_only_when_configured() -> None:
    """The otel extra costs nothing when `tracing.otel` is off: not even its import (the
    SDK is imported by observe/otel.SpanExport, built only for that config)."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys, veloxy.cli, veloxy.serving, veloxy.proxy.app, "
         "veloxy.observe.otel; print(any(m.startswith('opentelemetry') for m in sys.modules))"],
        capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_h1_has_no_asyncio() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, veloxy.h1.parser, veloxy.h1.serialize; "
         "print('asyncio' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
