"""The TLS and HTTP/2 keys of the config: accepted forms, errors with key paths, and the
normalized round trip that `veloxy check` relies on."""

from __future__ import annotations

import pytest

from veloxy.config import config_to_data, parse_config
from veloxy.errors import ConfigError


def _config(pki, **extra) -> dict:
    base = {"listen": ["127.0.0.1:8080"], "routes": [{"upstream": "a"}],
            "upstreams": {"a": {"servers": ["http://127.0.0.1:9001"]}}}
    base.update(extra)
    return base


def _problems(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value).splitlines()


def test_tls_listener_round_trip(pki) -> None:
    cert, key = str(pki.certs["default"].cert), str(pki.certs["default"].key)
    data = _config(pki, listen=[
        {"address": "127.0.0.1:8443", "tls": {
            "cert": cert, "key": key, "client_ca": str(pki.ca_file), "min_version": "1.3",
            "certificates": [{"names": ["B.test", "*.w.test"], "cert": cert, "key": key}]}},
        {"address": "127.0.0.1:8080", "h2c": True}, "127.0.0.1:8081"],
        upstreams={"a": {"servers": ["https://Up.test"], "tls": {"server_name": "x.test"}}},
        http2={"max_concurrent_streams": 50, "stream_window": "128k"})
    config = parse_config(data)
    tls = config.listen[0].tls
    assert tls is not None and tls.min_version == "1.3" and tls.http2
    assert tls.certificates[0].names == ("b.test", "*.w.test")
    assert config.listen[1].h2c and config.listen[1].tls is None
    server = config.upstreams["a"].servers[0]
    assert (server.url, server.port, server.secure, server.authority) == (
        "https://up.test", 443, True, "up.test")
    assert config.http2.stream_window == 131072
    assert parse_config(config_to_data(config)) == config


@pytest.mark.parametrize(("extra", "expected"), [
    ({"listen": [{"address": ":8443", "tls": {"cert": "{cert}", "key": "{cert}",
                                              "min_version": 1.1, "certificates": [
                                                  {"names": [], "cert": "{cert}",
                                                   "key": "{cert}"}]}}]},
     ["listen.0.tls.certificates.0.names: expected at least one server name",
      'listen.0.tls.min_version: expected "1.2" or "1.3", got 1.1']),
    ({"listen": [{"address": ":8443", "tls": {"cert": "{cert}", "key": "{cert}"},
                  "h2c": True}]},
     ["listen.0.h2c: h2c is for cleartext listeners; with tls, HTTP/2 is chosen by ALPN "
      "(tls.http2)"]),
    ({"admin": {"address": "127.0.0.1:9901", "tls": {"cert": "{cert}", "key": "{cert}"}}},
     ["admin: the admin listener serves cleartext HTTP/1.1 only (no tls, no h2c)"]),
    ({"listen": [{"address": ":8443", "tls": {"cert": "{cert}"}, "tsl": 1}]},
     ["listen.0.tsl: unknown key (did you mean tls?)"]),
    ({"http2": {"max_concurrent_streams": 0}},
     ["http2.max_concurrent_streams: expected an integer from 1 to 10000, got 0"]),
    ({"http2": {"stream_window": 1000}},
     ["http2.stream_window: expected a size from 65535 to 2147483647 bytes, got 1000"]),
    ({"http2": {"stream_window": "1m", "connection_window": "512k"}},
     ["http2.connection_window: connection_window (524288) is smaller than stream_window "
      "(1048576)"]),
])
def test_tls_config_errors(pki, extra, expected) -> None:
    import json

    cert = str(pki.certs["default"].cert)
    extra = json.loads(json.dumps(extra).replace("{cert}", cert))
    assert _problems(_config(pki, **extra)) == expected


def test_h2c_groups(pki) -> None:
    config = parse_config(_config(pki, upstreams={"a": {
        "servers": ["http://127.0.0.1:9001"], "protocol": "h2c"}}))
    assert config.upstreams["a"].protocol == "h2c"
    assert parse_config(config_to_data(config)) == config
    assert _problems(_config(pki, upstreams={"a": {
        "servers": ["https://127.0.0.1:9001"], "protocol": "h2c",
        "health_check": {"path": "/"}}})) == [
        "upstreams.a.servers.0: h2c is HTTP/2 without TLS: use an http:// URL (protocol: h2 "
        "for TLS)"]
    # active health checks probe h2c servers over HTTP/2 (tests/http2/test_h2c_exchange.py)
    checked = parse_config(_config(pki, upstreams={"a": {
        "servers": ["http://127.0.0.1:9001"], "protocol": "h2c",
        "health_check": {"path": "/"}, "retries": 2}}))
    assert checked.upstreams["a"].health_check is not None
    assert _problems(_config(pki, upstreams={"a": {
        "servers": ["http://127.0.0.1:9001"], "protocol": "grpc"}})) == [
        'upstreams.a.protocol: expected "http1", "h2c" or "h2", got "grpc"']


def test_h2_groups(pki) -> None:
    config = parse_config(_config(pki, upstreams={"a": {
        "servers": ["https://127.0.0.1:9001"], "protocol": "h2",
        "tls": {"ca": str(pki.ca_file)}}}))
    assert config.upstreams["a"].protocol == "h2"
    assert parse_config(config_to_data(config)) == config
    assert _problems(_config(pki, upstreams={"a": {
        "servers": ["https://127.0.0.1:9001", "http://127.0.0.1:9002"],
        "protocol": "h2"}})) == [
        "upstreams.a.servers.1: h2 is HTTP/2 over TLS: use an https:// URL (protocol: h2c "
        "for cleartext)"]


def test_upstream_tls_only_with_https(pki) -> None:
    assert _problems(_config(pki, upstreams={"a": {
        "servers": ["http://127.0.0.1:9001"], "tls": {"insecure_skip_verify": True}}})) == [
        "upstreams.a.tls: tls applies to https:// servers, and this group has none"]
