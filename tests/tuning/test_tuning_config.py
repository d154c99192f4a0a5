"""The `tuning:` section: values, defaults, documentation, and errors that name the key."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from veloxy.config import config_to_data, parse_config, parse_config_text
from veloxy.config.model import GcSettings, SocketOptions, Tuning
from veloxy.errors import ConfigError

BASE = "routes: [{upstream: a}]\nupstreams: {a: {servers: ['http://127.0.0.1:9']}}\n"


@pytest.mark.parametrize("model", [Tuning, SocketOptions, GcSettings], ids=lambda m: m.__name__)
def test_every_field_is_documented_with_its_default(model: type[BaseModel]) -> None:
    assert model.__doc__ and model.__doc__.strip()
    for name, field in model.model_fields.items():
        assert field.description and "default" in field.description.lower(), name


def test_defaults_set_nothing() -> None:
    tuning = parse_config_text(BASE).tuning
    assert tuning == Tuning()
    assert tuning.backlog == 4096
    assert tuning.downstream.is_default and tuning.upstream.is_default
    assert (tuning.gc.freeze_after_start, tuning.gc.gen0_threshold) == (False, 50000)


def test_values_sizes_and_round_trip() -> None:
    config = parse_config_text(BASE + """
tuning:
  backlog: 1024
  downstream: {tcp_nodelay: false, recv_buffer: 256k, send_buffer: 65536}
  upstream: {send_buffer: 1m}
  gc: {freeze_after_start: true, gen0_threshold: 50000}
""")
    t = config.tuning
    assert t.backlog == 1024
    assert t.downstream == SocketOptions(tcp_nodelay=False, recv_buffer=262144,
                                         send_buffer=65536)
    assert not t.downstream.is_default and not t.upstream.is_default
    assert t.upstream.send_buffer == 1 << 20 and t.upstream.tcp_nodelay
    assert t.gc == GcSettings(freeze_after_start=True, gen0_threshold=50000)
    assert parse_config(config_to_data(config)).tuning == t


def test_errors_name_the_key_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(BASE + """
tuning:
  backlog: 0
  downstream: {tcp_nodelay: "yes", recv_buffer: 100, sendbuf: 1}
  upstream: {send_buffer: 2g}
  gc: {gen0_threshold: 0, freeze: true}
  nagle: false
""")
    text = info.value.render()
    for line in (
        "tuning.backlog: expected an integer from 1 to 65535, got 0",
        'tuning.downstream.tcp_nodelay: expected true or false, got "yes"',
        "tuning.downstream.recv_buffer: expected a size from 4k to 1g, got 100",
        "tuning.downstream.sendbuf: unknown key (did you mean send_buffer?)",
        'tuning.upstream.send_buffer: expected a size from 4k to 1g, got "2g"',
        "tuning.gc.gen0_threshold: expected an integer from 1 to 10000000, or null, got 0",
        "tuning.gc.freeze: unknown key (did you mean freeze_after_start?)",
        "tuning.nagle: unknown key",
    ):
        assert line in text, text
