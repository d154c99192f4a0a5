"""veloxy's configuration: typed, frozen, documented, checked in one pass.

Why a package of its own with no I/O beyond reading the file: every other layer (server,
proxy, upstream, metrics) takes a `Config` and trusts it, so all the checking lives here, once,
and its errors name the key path of every problem at the same time (`ConfigError`). It imports
nothing of veloxy but `errors`.

    load_config("veloxy.yaml")            file -> Config (or ConfigError)
    parse_config(data, source)            parsed YAML/JSON data -> Config
    parse_config_text(text, source)       YAML text -> Config
    config_from_flags(listen, upstreams, workers, admin)   `veloxy serve --upstream URL ...`
    apply_overrides(config, listen, workers, admin)        --listen/--workers/--admin on a file
    config_to_data(config), dump_config(config)            normalized data / YAML (`check`)
    resolve_workers("auto" | n)           worker count, cgroup CPU quota respected
    parse_duration("250ms"), parse_size("16k"), format_duration(0.25)   shared by other commands

The models (`Config`, `Limits`, `Route`, `UpstreamGroup`, ...) document each field's default
and trade-off in model.py; `Model.model_fields[name].description` has the same text.
"""

from veloxy.config.cpus import resolve_workers, usable_cpus
from veloxy.config.load import (
    apply_overrides,
    config_from_flags,
    config_to_data,
    dump_config,
    load_config,
    parse_config,
    parse_config_text,
)
from veloxy.config.model import (
    BALANCE_POLICIES,
    DEFAULT_BACKLOG,
    Config,
    GcSettings,
    HealthCheck,
    Http2Settings,
    Limits,
    ListenAddress,
    ListenTLS,
    PassiveHealth,
    PoolSettings,
    RateLimit,
    Route,
    RouteMatch,
    Shed,
    SocketOptions,
    Timeouts,
    TLSCertificate,
    Tuning,
    UpstreamGroup,
    UpstreamServer,
    UpstreamTLS,
)
from veloxy.config.values import format_duration, parse_duration, parse_size

__all__ = [
    "BALANCE_POLICIES",
    "DEFAULT_BACKLOG",
    "Config",
    "GcSettings",
    "HealthCheck",
    "Http2Settings",
    "Limits",
    "ListenAddress",
    "ListenTLS",
    "PassiveHealth",
    "PoolSettings",
    "RateLimit",
    "Route",
    "RouteMatch",
    "Shed",
    "SocketOptions",
    "TLSCertificate",
    "Timeouts",
    "Tuning",
    "UpstreamGroup",
    "UpstreamServer",
    "UpstreamTLS",
    "apply_overrides",
    "config_from_flags",
    "config_to_data",
    "dump_config",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_config_text",
    "parse_duration",
    "parse_size",
    "resolve_workers",
    "usable_cpus",
]
