"""Config errors of upstream groups name the key path of every problem; the keys this issue
added (passive_health, dns_ttl) follow the same rules as the others."""

from __future__ import annotations

import pytest

from veloxy.config import PassiveHealth, parse_config_text
from veloxy.errors import ConfigError

SERVER = '["http://127.0.0.1:9001"]'


def problems(upstreams: str, routes: str = "[{upstream: api}]") -> list[str]:
    text = f"routes: {routes}\nupstreams:\n{upstreams}"
    try:
        parse_config_text(text, "veloxy.yaml")
    except ConfigError as exc:
        return [f"{path}: {message}" for path, message in exc.problems]
    return []


@pytest.mark.parametrize(("upstreams", "expected"), [
    (f"  api: {{servers: {SERVER}, balance: fastest}}\n",
     'upstreams.api.balance: unknown policy "fastest" (choose one of round_robin, least_conn, '
     "random, p2c_ewma, hash, adaptive)"),
    ('  api: {servers: ["http://127.0.0.1:9001", {url: "http://127.0.0.1:9002", weight: 0}]}\n',
     "upstreams.api.servers.1.weight: expected an integer >= 1, got 0"),
    (f"  api: {{servers: {SERVER}}}\n  api: {{servers: {SERVER}}}\n",
     "upstreams.api: duplicate key (line 4, column 3; first at line 3)"),
    (f"  api: {{servers: {SERVER}, health_check: {{interval: 1s, timeout: 2s}}}}\n",
     "upstreams.api.health_check.interval: interval (1s) is shorter than timeout (2s)"),
    (f"  api: {{servers: {SERVER}, passive_health: {{ejection: 1m, max_ejection: 30s}}}}\n",
     "upstreams.api.passive_health.max_ejection: max_ejection (30s) is shorter than "
     "ejection (1m)"),
    (f"  api: {{servers: {SERVER}, passive_health: {{failures: 0}}}}\n",
     "upstreams.api.passive_health.failures: expected an integer >= 1, got 0"),
    (f"  api: {{servers: {SERVER}, passive_health: {{ejections: 3}}}}\n",
     "upstreams.api.passive_health.ejections: unknown key (did you mean ejection?)"),
    (f"  api: {{servers: {SERVER}, dns_ttl: soon}}\n",
     'upstreams.api.dns_ttl: expected a duration like "2s", got "soon"'),
    (f'  api: {{servers: {SERVER}, hash_key: "header:"}}\n',
     'upstreams.api.hash_key: expected client_ip, "header:NAME" or "cookie:NAME", '
     'got "header:"'),
])
def test_group_errors_name_the_key_path(upstreams: str, expected: str) -> None:
    assert problems(upstreams) == [expected]


def test_a_route_naming_a_missing_group() -> None:
    assert problems(f"  api: {{servers: {SERVER}}}\n", routes="[{upstream: apx}]") == [
        'routes.0.upstream: unknown upstream "apx" (defined: api)']


def test_new_keys_defaults_and_off_switches() -> None:
    config = parse_config_text(
        f"routes: [{{upstream: api}}]\nupstreams:\n  api: {{servers: {SERVER}}}\n"
        f"  quiet: {{servers: {SERVER}, passive_health: null, dns_ttl: 0}}\n")
    api, off = config.upstreams["api"], config.upstreams["quiet"]
    assert api.passive_health == PassiveHealth(failures=5, ejection=10.0, max_ejection=300.0)
    assert api.dns_ttl == 30.0
    assert off.passive_health is None and off.dns_ttl == 0.0
