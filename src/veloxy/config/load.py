"""From a file, raw data or command-line flags to a checked `Config`, or one ConfigError.

Why one pass that collects everything: fixing a config one error per run is slow and
frustrating. pydantic already validates every field and keeps going; what it lacks is
messages a person can act on. So this module renders each pydantic error as
`key.path: message` ("upstreams.api.timeouts.connect: expected a duration like "2s", got
"fast""), suggests the nearest key for a typo, adds the cross-checks that pydantic skips when
other fields are broken (a route naming a missing upstream), and raises them all at once as
`veloxy.errors.ConfigError`.

Flags use the same models, so `--listen abc` and `listen: [abc]` are refused with the same
words; only the path differs (`--listen: ...`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from veloxy.config.model import (
    FILE_CONTEXT,
    FOREIGN,
    Config,
    ListenAddress,
    UpstreamServer,
    check_name,
    unknown_key_message,
    unknown_upstream_message,
)
from veloxy.config.values import format_duration, show
from veloxy.config.yaml_loader import read_yaml
from veloxy.errors import ConfigError

__all__ = [
    "apply_overrides",
    "config_from_flags",
    "config_to_data",
    "dump_config",
    "load_config",
    "parse_config",
    "parse_config_text",
]

Problem = tuple[str, str]


# --- entry points ----------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read and check a YAML config file. Every problem, including a missing or unreadable
    file, raises ConfigError with the file name as its source."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("", "cannot read config file: no such file")], source) from None
    except IsADirectoryError:
        raise ConfigError([("", "cannot read config file: it is a directory")], source
                          ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"cannot read config file: not UTF-8 text ({exc.reason} at "
                                f"byte {exc.start})")], source) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read config file: {exc.strerror or exc}")], source
                          ) from None
    return parse_config_text(text, source)


def parse_config_text(text: str, source: str | None = None) -> Config:
    """Check a config given as YAML text (what load_config does after reading the file)."""
    return parse_config(read_yaml(text, source), source)


def parse_config(data: object, source: str | None = None) -> Config:
    """Check already-parsed config data (a mapping as YAML or JSON would give it).

    Raises ConfigError listing every problem found, each with its key path.
    """
    if not isinstance(data, Mapping):
        message = ("the file is empty (expected a mapping with routes and upstreams)"
                   if data is None else
                   f"expected a mapping at the top level (with routes and upstreams), "
                   f"got {show(data)}")
        raise ConfigError([("", message)], source)
    payload = {FOREIGN + key if key == "source" else key: value for key, value in data.items()}
    payload["source"] = source
    try:
        return Config.model_validate(payload, context={FILE_CONTEXT: True})
    except ValidationError as exc:
        problems = render_problems(exc) + _unknown_upstreams(data)
        raise ConfigError(_tidy(problems), source) from None


def config_from_flags(listen: Sequence[str], upstreams: Sequence[str],
                      workers: str | None = None, admin: str | None = None) -> Config:
    """A config from command-line flags alone: one route "/" to one group "default" holding
    every --upstream URL (round_robin, default timeouts). No --listen = 127.0.0.1:8080."""
    if not upstreams:
        raise ConfigError([("", "give --upstream URL or --config FILE")])
    raw: dict[str, object] = {
        "routes": [{"upstream": "default"}],
        "upstreams": {"default": {"servers": list(upstreams)}},
    }
    raw.update(_flag_values(listen, workers, admin))
    try:
        return Config.model_validate(raw, context={FILE_CONTEXT: True})
    except ValidationError as exc:
        raise ConfigError(_tidy(_as_flags(render_problems(exc)))) from None


def apply_overrides(config: Config, listen: Sequence[str] | None = None,
                    workers: str | None = None, admin: str | None = None,
                    workers_mode: str | None = None) -> Config:
    """The file's config with --listen, --workers, --admin and --workers-mode applied (only
    those given; an empty --listen list counts as not given). Errors name the flag, not the
    file key."""
    updates = _flag_values(listen or (), workers, admin)
    if workers_mode is not None:
        updates["workers_mode"] = workers_mode
    if not updates:
        return config
    data: dict[str, object] = {name: getattr(config, name) for name in Config.model_fields}
    data.update(updates)
    try:
        return Config.model_validate(data, context={FILE_CONTEXT: True})
    except ValidationError as exc:
        raise ConfigError(_tidy(_as_flags(render_problems(exc)))) from None


def _flag_values(listen: Sequence[str], workers: str | None, admin: str | None
                 ) -> dict[str, object]:
    values: dict[str, object] = {}
    if listen:
        values["listen"] = list(listen)
    if workers is not None:
        values["workers"] = workers
    if admin is not None:
        values["admin"] = admin
    return values


_FLAG_PATHS = (("listen", "--listen"), ("workers_mode", "--workers-mode"),
               ("workers", "--workers"), ("admin", "--admin"),
               ("upstreams.default.servers", "--upstream"))


def _as_flags(problems: list[Problem]) -> list[Problem]:
    """listen.1 -> --listen, upstreams.default.servers.0 -> --upstream: the value is in the
    message, the flag is what the person typed."""
    renamed = []
    for path, message in problems:
        for key, flag in _FLAG_PATHS:
            if path == key or path.startswith(key + "."):
                path = flag
                break
        renamed.append((path, message))
    return renamed


# --- rendering pydantic errors ---------------------------------------------------------------

_PREFIXES = ("Value error, ", "Assertion failed, ")
_TOP_LEVEL_ORDER = {name: rank for rank, name in enumerate(Config.model_fields)}


def render_problems(error: ValidationError) -> list[Problem]:
    """One (key path, message) pair per pydantic error, worded for a person."""
    problems = []
    for err in error.errors(include_url=False):
        loc = tuple(part.removeprefix(FOREIGN) if isinstance(part, str) else part
                    for part in err["loc"])
        if len(loc) == 3 and loc[0] == "upstreams" and err["loc"][2] == "name":
            loc = loc[:2]  # the group's name is its key (a written `name:` is FOREIGN)
        problems.append((".".join(map(str, loc)), _message(err, loc)))
    return problems


def _message(err: Any, loc: tuple[str | int, ...]) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "missing":
        return "missing required key"
    if kind in ("extra_forbidden", "invalid_key"):
        model = _model_at(loc[:-1])
        return unknown_key_message(loc[-1], model.file_keys() if model else ())
    if kind in ("model_type", "model_attributes_type", "dict_type", "mapping_type"):
        return f"expected a mapping, got {show(value)}"
    if kind in ("tuple_type", "list_type", "iterable_type"):
        return f"expected a list, got {show(value)}"
    if kind in ("string_type", "string_unicode"):
        return f"expected a string, got {show(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {show(value)}"
    if kind.startswith("int_"):
        return f"expected an integer, got {show(value)}"
    message: str = err["msg"]
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    return message


def _model_at(loc: tuple[str | int, ...]) -> type[Any] | None:
    """The model class whose keys live at `loc` (for "did you mean"), or None."""
    model: type[BaseModel] = Config
    index = 0
    while index < len(loc):
        key = loc[index]
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            return None
        found = _nested_model(field.annotation)
        if found is None:
            return None
        model, depth = found
        index += 1 + depth
    return model if index == len(loc) else None


def _nested_model(annotation: Any) -> tuple[type[BaseModel], int] | None:
    """(model, container levels to skip) for X, X | None, tuple[X, ...], Mapping[str, X]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, 0
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _nested_model(arg)
            if found is not None:
                return found
        return None
    if origin is typing.Annotated:
        return _nested_model(args[0])
    inner = args[0] if origin is tuple else args[-1] if origin in (dict, Mapping) else None
    if inner is None:
        return None
    found = _nested_model(inner)
    return (found[0], found[1] + 1) if found else None


def _unknown_upstreams(data: Mapping[Any, Any]) -> list[Problem]:
    """Routes naming a group that is not defined, checked on the raw data so that it is
    reported even when other problems stop Config's own cross-check from running."""
    groups, routes = data.get("upstreams"), data.get("routes")
    if not isinstance(groups, Mapping) or not groups or not isinstance(routes, list | tuple):
        return []  # no groups at all: "upstreams: ..." says so already
    defined = [name for name in groups if _is_name(name)]
    problems = []
    for index, route in enumerate(routes):
        name = route.get("upstream") if isinstance(route, Mapping) else None
        if isinstance(name, str) and _is_name(name) and name not in defined:
            problems.append((f"routes.{index}.upstream", unknown_upstream_message(name, defined)))
    return problems


def _is_name(value: object) -> bool:
    try:
        check_name(value)
    except ValueError:
        return False
    return True


def _tidy(problems: list[Problem]) -> list[Problem]:
    """Drop repeats, keep the order of the file's top-level keys (then the order found)."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: _TOP_LEVEL_ORDER.get(p[0].partition(".")[0], -1))


# --- back to plain data ----------------------------------------------------------------------


def config_to_data(config: Config) -> dict[str, Any]:
    """The normalized config as plain YAML/JSON data with every default filled in.

    Durations are written as strings ("2s"), so that `parse_config(config_to_data(c),
    c.source) == c` holds. This is what `veloxy check` can show: what veloxy will really do.
    """
    def server(s: UpstreamServer) -> dict[str, Any]:
        return {"url": s.url, "weight": s.weight}

    def timing(model: BaseModel) -> dict[str, Any]:
        return {name: format_duration(value) if isinstance(value, float) else value
                for name, value in model}

    def listener(a: ListenAddress) -> str | dict[str, Any]:
        if a.tls is None and not a.h2c:
            return str(a)
        entry: dict[str, Any] = {"address": str(a)}
        if a.tls is not None:
            entry["tls"] = a.tls.model_dump()
        if a.h2c:
            entry["h2c"] = True
        return entry

    def group_tls(g: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {} if g.tls is None else {"tls": g.tls.model_dump()}
        if g.protocol != "http1":
            extra["protocol"] = g.protocol
        return extra

    def route_limits(r: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if r.rate_limit is not None:
            extra["rate_limit"] = r.rate_limit.model_dump()
        if r.max_concurrent is not None:
            extra["max_concurrent"] = r.max_concurrent
        return extra

    return {
        "listen": [listener(a) for a in config.listen],
        "workers": config.workers,
        "admin": str(config.admin) if config.admin else None,
        "limits": {**timing(config.limits),
                   "shed": timing(config.limits.shed) if config.limits.shed else None},
        "routes": [{
            "match": {
                "host": r.match.host,
                "path_prefix": r.match.path_prefix,
                "methods": list(r.match.methods) if r.match.methods is not None else None,
                "headers": dict(r.match.headers),
            },
            "upstream": r.upstream,
            "strip_prefix": r.strip_prefix,
            **route_limits(r),
        } for r in config.routes],
        "upstreams": {name: {
            "servers": [server(s) for s in g.servers],
            "balance": g.balance,
            "hash_key": g.hash_key,
            "timeouts": timing(g.timeouts),
            "pool": timing(g.pool),
            "retries": g.retries,
            "health_check": timing(g.health_check) if g.health_check else None,
            "passive_health": timing(g.passive_health) if g.passive_health else None,
            "dns_ttl": format_duration(g.dns_ttl),
            **group_tls(g),
        } for name, g in config.upstreams.items()},
        "http2": config.http2.model_dump(),
        "tuning": config.tuning.model_dump(),
    }


def dump_config(config: Config) -> str:
    """config_to_data as YAML text, keys in the documented order."""
    return yaml.safe_dump(config_to_data(config), sort_keys=False, allow_unicode=True,
                          default_flow_style=False)

