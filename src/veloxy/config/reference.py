"""The config reference (docs/config.md), rendered from the models' own field docs.

The documentation of every key lives once, beside the field it describes (model.py); this
module walks the models and writes it out as Markdown, and a test keeps docs/config.md
equal to what it renders, so the two cannot drift apart.

    python -m veloxy.config.reference > docs/config.md
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic import BaseModel

from veloxy.config.model import (
    AccessLog,
    Config,
    GcSettings,
    HealthCheck,
    Http2Settings,
    Limits,
    ListenTLS,
    OtelExport,
    PassiveHealth,
    PoolSettings,
    RateLimit,
    Route,
    RouteMatch,
    Shed,
    SocketOptions,
    Timeouts,
    TLSCertificate,
    Tracing,
    Tuning,
    UpstreamGroup,
    UpstreamTLS,
)

# (key path shown in the heading, model); a model's nested models get their own section.
SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("(top level)", Config),
    ("listen[].tls", ListenTLS),
    ("listen[].tls.certificates[]", TLSCertificate),
    ("http2", Http2Settings),
    ("limits", Limits),
    ("limits.shed", Shed),
    ("routes[]", Route),
    ("routes[].match", RouteMatch),
    ("routes[].rate_limit", RateLimit),
    ("upstreams.NAME", UpstreamGroup),
    ("upstreams.NAME.timeouts", Timeouts),
    ("upstreams.NAME.pool", PoolSettings),
    ("upstreams.NAME.health_check", HealthCheck),
    ("upstreams.NAME.passive_health", PassiveHealth),
    ("upstreams.NAME.tls", UpstreamTLS),
    ("tuning", Tuning),
    ("tuning.downstream, tuning.upstream", SocketOptions),
    ("tuning.gc", GcSettings),
    ("access_log", AccessLog),
    ("tracing", Tracing),
    ("tracing.otel", OtelExport),
)

# Fields filled in by veloxy itself, never written in a file.
_INTERNAL = {"source", "name"}


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "see below" if isinstance(field.default_factory, type) else "empty"
    value = field.default
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation)
    for noise in ("typing.", "veloxy.config.model.", "collections.abc."):
        text = text.replace(noise, "")
    return text


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config models (`python -m veloxy.config.reference`); do not edit by",
        "hand. Durations are written like `250ms`, `2s`, `1m` or as a number of seconds; sizes",
        "like `64k` or a number of bytes. Unknown keys are errors. `veloxy check FILE` validates",
        "a file and names the key path of every problem.",
        "",
    ]
    for path, model in SECTIONS:
        lines += [f"## `{path}`", ""]
        doc = inspect.cleandoc(model.__doc__ or "")
        if doc:
            lines += [doc, ""]
        for name, field in model.model_fields.items():
            if name in _INTERNAL:
                continue
            description = " ".join((field.description or "").split())
            lines.append(f"- **`{name}`** ({_type_name(field.annotation)}; default "
                         f"{_default(field)}): {description}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
