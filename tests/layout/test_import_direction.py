"""The layers import one way only (docs/design.md, "Layers"): every import statement of
every module under src/veloxy, read with `ast` (tests/layout/imports.py), is checked against
the table below, and the table against the one in docs/design.md.

What counts. A layer's modules may run (directly, or through the modules they import) only
modules of the layers ALLOWED names for it: imports at module level and inside functions
alike, since a deferred import is a runtime dependency as much as an eager one (it is only
paid later). Imports under `if TYPE_CHECKING:` never run, so they are not followed through
(they pull nothing in); but each one is held to the table as a direct edge all the same: a
type annotation that names a higher layer's class means the lower layer is written against
it, and the fix is a Protocol in the lower layer, not a hidden import. Modules outside the
table (cli, workers, __main__) sit on top and may import anything; what they are imported by
is checked (admin may import workers, and what workers runs counts for admin).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.layout.imports import ImportGraph, describe, read_sources

SRC = Path(__file__).resolve().parents[2] / "src"
DESIGN = SRC.parent / "docs" / "design.md"

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
    # h1, http2: whether the C fast lane and HPACK lane are built (`veloxy doctor` says)
    "doctor": {"errors", "config", "net", "h1", "http2"},
    "demo": {"errors", "h1", "net", "config", "loadgen", "lab"},
    # metrics handles, access log, trace context: a leaf that net, upstream and proxy use
    "observe": set(),
    # metrics sources, reload, the admin listener: one serving process's operations side
    "admin": {"errors", "h1", "net", "config", "tls", "http2", "upstream", "proxy", "observe",
              "workers"},
}


def layer(module: str) -> str | None:
    """"veloxy.net.client" -> "net"; None for the top package and for other packages."""
    parts = module.split(".")
    return parts[1] if parts[0] == "veloxy" and len(parts) > 1 else None


def violations(graph: ImportGraph, allowed: dict[str, set[str]]) -> list[str]:
    """One line per module of a layer in `allowed` that can run a module of a layer it may
    not import, or that names one under TYPE_CHECKING, with the chain of imports."""
    found = []
    for module in sorted(graph.imports):
        own = layer(module)
        if own not in allowed:
            continue
        for target, chain in sorted(graph.reach(module).items()):
            if (other := layer(target)) is not None and other != own \
                    and other not in allowed[own]:
                found.append(f"{module} runs {target}: {describe(chain)}")
        for imp in graph.imports[module]:
            other = layer(imp.target)
            if imp.when == "type_only" and other is not None and other != own \
                    and other not in allowed[own]:
                found.append(f"{module} names {imp.target}: {describe([imp])}")
    return found


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph.from_sources(read_sources(SRC, "veloxy"))


def test_every_layer_imports_only_what_it_may(graph: ImportGraph) -> None:
    assert {layer(m) for m in graph.imports} >= set(ALLOWED), "a layer of the table is gone"
    assert violations(graph, ALLOWED) == []


def test_the_table_in_design_md_is_the_one_enforced() -> None:
    assert design_table(DESIGN.read_text(encoding="utf-8")) == ALLOWED


def design_table(text: str) -> dict[str, set[str]]:
    """The "| layer | may import (besides itself) |" table of docs/design.md, as ALLOWED."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if re.fullmatch(r"\|\s*layer\s*\|\s*may import.*\|", line.strip()))
    table: dict[str, set[str]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        name, imports = (cell.strip() for cell in line.strip().strip("|").split("|")[:2])
        table[name.strip("`")] = set(re.findall(r"`([\w.]+)`", imports))
    return table


def test_a_function_level_import_that_breaks_the_table_is_caught(graph: ImportGraph) -> None:
    """What the former test (import each module, look at sys.modules) could not see: an
    import inside a function that the import of the module never runs."""
    sneaky = ('"""h1 reaching up into the proxy, lazily."""\n\n'
              "def later():\n"
              "    from veloxy.proxy import router\n"
              "    return router\n")
    found = violations(graph.with_module("veloxy.h1.sneaky", sneaky), ALLOWED)
    assert found and all(line.startswith("veloxy.h1.sneaky runs ") for line in found), found
    assert ("veloxy.h1.sneaky runs veloxy.proxy.router: "
            "veloxy.h1.sneaky:4 -> veloxy.proxy.router (deferred)") in found


def test_a_chain_through_an_allowed_layer_is_caught(graph: ImportGraph) -> None:
    """net may import h1; an h1 module that (in a method, relatively) imports observe puts
    observe under every net module that imports it, and both are named."""
    sneaky = ("class Late:\n"
              "    def count(self):\n"
              "        from ..observe import metrics\n"
              "        return metrics\n")
    importer = "from veloxy.h1 import counted\n"
    found = violations(graph.with_module("veloxy.h1.counted", sneaky)
                       .with_module("veloxy.net.counting", importer), ALLOWED)
    assert any(line.startswith("veloxy.h1.counted runs veloxy.observe.metrics")
               for line in found), found
    assert any(line.startswith("veloxy.net.counting runs veloxy.observe.metrics")
               and "veloxy.net.counting:1 -> veloxy.h1.counted" in line for line in found), found


def test_type_checking_imports_are_held_to_the_table_but_not_followed(
        graph: ImportGraph) -> None:
    upward = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n"
              "    from veloxy.proxy.forward import ProxyExchange\n")
    allowed_type = ("from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n"
                    "    from veloxy.h1.head import RequestHead\n")
    flagged = violations(graph.with_module("veloxy.net.typed", upward), ALLOWED)
    assert flagged == ["veloxy.net.typed names veloxy.proxy.forward: "
                       "veloxy.net.typed:3 -> veloxy.proxy.forward (type_only)"]
    typed = graph.with_module("veloxy.net.typed", allowed_type)
    assert violations(typed, ALLOWED) == []
    assert "veloxy.h1.head" not in typed.reach("veloxy.net.typed")


def test_h1_has_no_asyncio(graph: ImportGraph) -> None:
    """h1 is bytes in, events out: nothing it can run, even lazily, imports asyncio."""
    h1 = [m for m in graph.imports if layer(m) == "h1"]
    assert "veloxy.h1.parser" in h1
    for module in h1:
        assert "asyncio" not in graph.reach(module), describe(graph.reach(module)["asyncio"])


def test_opentelemetry_is_imported_only_when_configured(graph: ImportGraph) -> None:
    """The otel extra costs nothing when `tracing.otel` is off: not even its import (the
    SDK is imported inside observe/otel.SpanExport, built only for that config)."""
    deferred = graph.reach("veloxy.observe.otel")
    assert any(m.startswith("opentelemetry") for m in deferred), "the reader lost the SDK"
    for module in ("veloxy.cli", "veloxy.serving", "veloxy.proxy.app", "veloxy.observe.otel"):
        eager = graph.reach(module, eager_only=True)
        pulled = [m for m in eager if m.startswith("opentelemetry")]
        assert not pulled, f"{module}: {describe(eager[pulled[0]])}"
