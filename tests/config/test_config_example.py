"""The documented example config: it parses, every field lands where it should, and the
normalized form (`veloxy check`) is stable and reads back to the same Config.

Why golden: the example is the contract other packages and the docs rely on; any change in
how it is read must show up here as a diff of plain text.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from veloxy.config import (
    Config,
    HealthCheck,
    Limits,
    ListenAddress,
    PoolSettings,
    Route,
    RouteMatch,
    Timeouts,
    UpstreamGroup,
    UpstreamServer,
    config_to_data,
    dump_config,
    load_config,
    parse_config,
    parse_config_text,
)

# The full example of the config contract, comments included (they must not matter).
EXAMPLE = """\
listen: ["127.0.0.1:8080"]      # list of "HOST:PORT" strings or {address: "HOST:PORT"}
workers: 1                      # int >= 1 or "auto"
admin: "127.0.0.1:9901"         # optional HOST:PORT, default None
limits:
  max_request_line: 8192        # longer -> 414
  max_header_bytes: 65536       # larger -> 431
  max_body_bytes: null          # null = unlimited; larger -> 413
  header_timeout: 10s           # full request head must arrive within this, else 408 and close
  idle_timeout: 60s             # idle keep-alive client connections closed after this
  shutdown_timeout: 30s
  shutdown_delay: 0s
routes:                          # first match wins; at least one route required
  - match: {host: "api.example.com", path_prefix: "/api/", methods: [GET, POST], headers: {X-Canary: "1"}}
    upstream: api
    strip_prefix: false
upstreams:
  api:
    servers: ["http://127.0.0.1:9001", {url: "http://127.0.0.1:9002", weight: 3}]
    balance: round_robin        # round_robin | least_conn | random | p2c_ewma | hash | adaptive
    hash_key: client_ip         # for balance: hash: client_ip | "header:NAME" | "cookie:NAME"
    timeouts: {connect: 2s, response_header: 30s, read: 60s}
    pool: {max_connections: 1024, max_idle: 256, idle_timeout: 60s, max_lifetime: 300s, max_waiting: 1024, wait_timeout: 5s}
    retries: 1
    health_check: {path: /healthz, interval: 5s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 3}
"""  # noqa: E501 (kept exactly as in the contract)

# What `dump_config` prints for EXAMPLE: every value explicit, durations in their shortest form.
EXAMPLE_NORMALIZED = """\
listen:
- 127.0.0.1:8080
workers: 1
admin: 127.0.0.1:9901
limits:
  max_request_line: 8192
  max_header_bytes: 65536
  max_body_bytes: null
  header_timeout: 10s
  idle_timeout: 1m
  shutdown_timeout: 30s
  shutdown_delay: 0s
  max_connections: null
  shed: null
routes:
- match:
    host: api.example.com
    path_prefix: /api/
    methods:
    - GET
    - POST
    headers:
      x-canary: '1'
  upstream: api
  strip_prefix: false
upstreams:
  api:
    servers:
    - url: http://127.0.0.1:9001
      weight: 1
    - url: http://127.0.0.1:9002
      weight: 3
    balance: round_robin
    hash_key: client_ip
    timeouts:
      connect: 2s
      response_header: 30s
      read: 1m
    pool:
      max_connections: 1024
      max_idle: 256
      idle_timeout: 1m
      max_lifetime: 5m
      max_waiting: 1024
      wait_timeout: 5s
    retries: 1
    health_check:
      path: /healthz
      interval: 5s
      timeout: 1s
      healthy_threshold: 2
      unhealthy_threshold: 3
    passive_health:
      failures: 5
      ejection: 10s
      max_ejection: 5m
    dns_ttl: 30s
http2:
  max_concurrent_streams: 100
  stream_window: 262144
  connection_window: 4194304
  send_timeout: 60.0
tuning:
  backlog: 4096
  downstream:
    tcp_nodelay: true
    recv_buffer: null
    send_buffer: null
  upstream:
    tcp_nodelay: true
    recv_buffer: null
    send_buffer: null
  gc:
    freeze_after_start: false
    gen0_threshold: 50000
  malloc_mmap_threshold: null
"""

MINIMAL = """\
routes: [{upstream: api}]
upstreams:
  api: {servers: ["http://127.0.0.1:9001"]}
"""


@pytest.fixture
def example() -> Config:
    return parse_config_text(EXAMPLE, "veloxy.yaml")


def test_example_top_level(example: Config) -> None:
    assert example.source == "veloxy.yaml"
    assert example.listen == (ListenAddress(host="127.0.0.1", port=8080),)
    assert example.workers == 1
    assert example.admin == ListenAddress(host="127.0.0.1", port=9901)
    assert str(example.admin) == "127.0.0.1:9901"


def test_example_limits(example: Config) -> None:
    assert example.limits == Limits(
        max_request_line=8192, max_header_bytes=65536, max_body_bytes=None,
        header_timeout=10.0, idle_timeout=60.0, shutdown_timeout=30.0)
    assert isinstance(example.limits.header_timeout, float)


def test_example_routes(example: Config) -> None:
    (route,) = example.routes
    assert route == Route(
        match=RouteMatch(host="api.example.com", path_prefix="/api/", methods=("GET", "POST"),
                         headers=(("x-canary", "1"),)),
        upstream="api", strip_prefix=False)


def test_example_upstreams(example: Config) -> None:
    assert list(example.upstreams) == ["api"]
    api = example.upstreams["api"]
    assert api.name == "api"
    assert api.servers == (
        UpstreamServer(url="http://127.0.0.1:9001", host="127.0.0.1", port=9001, weight=1),
        UpstreamServer(url="http://127.0.0.1:9002", host="127.0.0.1", port=9002, weight=3),
    )
    assert api.balance == "round_robin"
    assert api.hash_key == "client_ip"
    assert api.hash_source == ("client_ip", None)
    assert api.timeouts == Timeouts(connect=2.0, response_header=30.0, read=60.0)
    assert api.pool == PoolSettings(max_connections=1024, max_idle=256, idle_timeout=60.0,
                                    max_lifetime=300.0, max_waiting=1024, wait_timeout=5.0)
    assert api.retries == 1
    assert api.health_check == HealthCheck(path="/healthz", interval=5.0, timeout=1.0,
                                           healthy_threshold=2, unhealthy_threshold=3)


def test_example_normalized_check_output(example: Config) -> None:
    assert dump_config(example) == EXAMPLE_NORMALIZED


def test_check_of_example_file(tmp_path: Path) -> None:
    path = tmp_path / "veloxy.yaml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    assert config.source == str(path)
    assert config == parse_config_text(EXAMPLE, str(path))
    assert dump_config(config) == EXAMPLE_NORMALIZED


def test_normalized_form_reads_back_to_the_same_config(example: Config) -> None:
    assert parse_config(config_to_data(example), example.source) == example
    assert parse_config_text(dump_config(example), example.source) == example


def test_minimal_config_takes_every_default() -> None:
    config = parse_config_text(MINIMAL)
    assert config.source is None
    assert config.listen == (ListenAddress(host="127.0.0.1", port=8080),)
    assert config.workers == 1
    assert config.admin is None
    assert config.limits == Limits()
    assert config.limits.max_body_bytes is None
    assert config.routes == (Route(upstream="api"),)
    assert config.routes[0].match == RouteMatch(host=None, path_prefix="/", methods=None,
                                                headers=())
    group = config.upstreams["api"]
    assert (group.balance, group.hash_key, group.retries, group.health_check) == (
        "round_robin", "client_ip", 1, None)
    assert group.timeouts == Timeouts()
    assert group.pool == PoolSettings()
    assert parse_config(config_to_data(config)) == config


def test_defaults_match_the_contract() -> None:
    assert Limits() == Limits(max_request_line=8192, max_header_bytes=65536,
                              max_body_bytes=None, header_timeout="10s", idle_timeout="60s",
                              shutdown_timeout="30s")
    assert Timeouts() == Timeouts(connect="2s", response_header="30s", read="60s")
    assert PoolSettings() == PoolSettings(max_connections=1024, max_idle=1024,
                                          idle_timeout="60s", max_lifetime="300s",
                                          max_waiting=1024, wait_timeout="5s")
    assert HealthCheck() == HealthCheck(path="/healthz", interval="5s", timeout="1s",
                                        healthy_threshold=2, unhealthy_threshold=3)


def test_config_is_frozen(example: Config) -> None:
    with pytest.raises(ValidationError):
        example.workers = 4  # type: ignore[misc]
    with pytest.raises(ValidationError):
        example.limits.max_body_bytes = 10  # type: ignore[misc]
    with pytest.raises(TypeError):
        example.upstreams["other"] = example.upstreams["api"]  # type: ignore[index]
    assert isinstance(example.routes, tuple)
    assert isinstance(example.upstreams["api"].servers, tuple)


def test_config_pickles_for_worker_processes(example: Config) -> None:
    assert pickle.loads(pickle.dumps(example)) == example


def test_model_dump_works(example: Config) -> None:
    dumped = example.model_dump()
    assert dumped["upstreams"]["api"]["servers"][1]["weight"] == 3


MODELS: list[type[BaseModel]] = [Config, ListenAddress, Limits, Route, RouteMatch,
                                 UpstreamGroup, UpstreamServer, Timeouts, PoolSettings,
                                 HealthCheck]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_is_documented(model: type[BaseModel]) -> None:
    """Habit 3: every field says what it does, its default and the trade-off."""
    assert model.__doc__ and model.__doc__.strip()
    for name, field in model.model_fields.items():
        assert field.description and len(field.description) > 20, f"{model.__name__}.{name}"
        if not field.is_required() and name not in ("host", "port", "source"):
            assert "default" in field.description.lower(), f"{model.__name__}.{name}"


def test_models_can_be_built_in_code() -> None:
    server = UpstreamServer(url="http://[::1]:9001/")
    assert (server.url, server.host, server.port, server.weight) == (
        "http://[::1]:9001", "::1", 9001, 1)
    assert server.authority == "[::1]:9001"
    assert UpstreamServer(url="http://Example.com").authority == "example.com"
    group = UpstreamGroup(name="api", servers=[server], balance="hash",
                          hash_key="header:X-User")
    assert group.hash_source == ("header", "x-user")
    config = Config(routes=[Route(upstream="api")], upstreams={"api": group})
    assert config.upstreams["api"] is group
    assert str(ListenAddress(host="::", port=80)) == "[::]:80"
    with pytest.raises(ValidationError):
        Config(routes=[Route(upstream="apo")], upstreams={"api": group})


def test_max_idle_follows_max_connections_unless_given() -> None:
    assert PoolSettings(max_connections=100).max_idle == 100
    assert PoolSettings().max_idle == 1024
    assert PoolSettings(max_connections=100, max_idle=10).max_idle == 10
