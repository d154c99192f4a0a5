"""Config from command-line flags, flags over a file, and reading the file itself.

Why: `veloxy serve --upstream URL` must work without any file, and a flag's error must name
the flag the person typed, not a key of a file they never wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from veloxy.config import (
    ListenAddress,
    UpstreamServer,
    apply_overrides,
    config_from_flags,
    load_config,
    parse_config_text,
)
from veloxy.errors import ConfigError

FILE = """\
listen: ["127.0.0.1:8080"]
workers: 2
admin: "127.0.0.1:9901"
routes: [{upstream: api}]
upstreams:
  api: {servers: ["http://127.0.0.1:9001"]}
"""


def test_flags_alone_build_one_route_to_default() -> None:
    config = config_from_flags([], ["http://127.0.0.1:9001", "http://127.0.0.1:9002"])
    assert config.listen == (ListenAddress(host="127.0.0.1", port=8080),)
    assert config.workers == 1
    assert config.admin is None
    assert config.source is None
    (route,) = config.routes
    assert (route.upstream, route.match.path_prefix, route.match.host) == ("default", "/", None)
    group = config.upstreams["default"]
    assert group.name == "default"
    assert group.servers == (UpstreamServer(url="http://127.0.0.1:9001"),
                             UpstreamServer(url="http://127.0.0.1:9002"))
    assert group.balance == "round_robin"


def test_flags_listen_workers_admin() -> None:
    config = config_from_flags(["[::1]:0", ":81"], ["http://a:1"], "auto", "127.0.0.1:9901")
    assert [str(a) for a in config.listen] == ["[::1]:0", "0.0.0.0:81"]
    assert config.workers == "auto"
    assert str(config.admin) == "127.0.0.1:9901"
    assert config_from_flags([], ["http://a:1"], "4", None).workers == 4


def test_flags_need_an_upstream() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_flags(["127.0.0.1:8080"], [])
    assert str(info.value) == "give --upstream URL or --config FILE"


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_flags(["abc", "127.0.0.1:80"], ["http://a", "b:80", "ftp://c"], "x",
                          "1.2.3.4:99999")
    assert str(info.value).splitlines() == [
        '--listen: expected HOST:PORT, got "abc"',
        '--workers: expected a number of workers >= 1 or "auto", got "x"',
        '--admin: expected a port from 0 to 65535, got "1.2.3.4:99999"',
        '--upstream: expected a URL with a scheme, got "b:80" (write "http://b:80")',
        '--upstream: unsupported scheme "ftp" (http:// or https://)',
    ]
    assert info.value.source is None


def test_duplicate_upstream_flags() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_flags([], ["http://a", "http://a:80"])
    assert str(info.value) == ("--upstream: same server as servers.0 (use weight to send it "
                               "more traffic)")


def test_overrides_replace_only_what_is_given() -> None:
    config = parse_config_text(FILE, "veloxy.yaml")
    assert apply_overrides(config, None, None, None) is config
    assert apply_overrides(config, [], None, None) is config
    changed = apply_overrides(config, ["0.0.0.0:80", "[::]:80"], None, None)
    assert [str(a) for a in changed.listen] == ["0.0.0.0:80", "[::]:80"]
    assert (changed.workers, str(changed.admin), changed.source) == (
        2, "127.0.0.1:9901", "veloxy.yaml")
    assert changed.routes == config.routes
    assert changed.upstreams == config.upstreams
    changed = apply_overrides(config, None, "auto", "127.0.0.1:9999")
    assert (changed.workers, str(changed.admin), changed.listen) == (
        "auto", "127.0.0.1:9999", config.listen)


def test_override_errors_name_the_flag() -> None:
    config = parse_config_text(FILE, "veloxy.yaml")
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, ["abc"], "0", "127.0.0.1:8080")
    assert str(info.value).splitlines() == [
        '--listen: expected HOST:PORT, got "abc"',
        '--workers: expected a number of workers >= 1 or "auto", got "0"',
    ]
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, None, None, "127.0.0.1:8080")
    assert str(info.value) == "--admin: same address as listen.0 (127.0.0.1:8080)"


# --- files ---------------------------------------------------------------------------------


def test_load_config(tmp_path: Path) -> None:
    path = tmp_path / "veloxy.yaml"
    path.write_text(FILE)
    assert load_config(path) == load_config(str(path)) == parse_config_text(FILE, str(path))


def test_load_config_errors_carry_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "veloxy.yaml"
    path.write_text(FILE.replace("workers: 2", "workers: none"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f'{path}: workers: expected a number of workers >= 1 or '
                               f'"auto", got "none"')
    assert info.value.source == str(path)
    assert info.value.problems == [
        ("workers", 'expected a number of workers >= 1 or "auto", got "none"')]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read config file: no such file"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read config file: it is a directory"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"workers: \xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: cannot read config file: not UTF-8 text")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(FILE)
    path.chmod(0)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read config file: Permission denied"
