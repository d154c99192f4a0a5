"""Golden tests: YAML text in, the exact error text out (one rule per case), plus the
normalized value for the inputs each rule accepts.

Why exact text: the messages are the user interface of the config. A test that only checks
"raises" would let "Value error, Input should be..." creep back in.
"""

from __future__ import annotations

import pytest

from veloxy.config import Config, parse_config, parse_config_text
from veloxy.errors import ConfigError

ROUTES = "routes: [{upstream: api}]\n"
UPSTREAMS = 'upstreams:\n  api:\n    servers: ["http://127.0.0.1:9001"]\n'


def config(text: str, *, routes: bool = True, upstreams: bool = True) -> Config:
    """Parse `text`, completed with a route and an upstream group unless it has its own."""
    return parse_config_text(text + (ROUTES if routes else "") + (UPSTREAMS if upstreams else ""))


def problems(text: str, *, routes: bool = True, upstreams: bool = True,
             source: str | None = None) -> list[str]:
    """The error lines for `text` (completed as in `config`)."""
    full = text + (ROUTES if routes else "") + (UPSTREAMS if upstreams else "")
    with pytest.raises(ConfigError) as info:
        parse_config_text(full, source)
    assert "Value error" not in str(info.value)
    assert "Input should" not in str(info.value)
    return str(info.value).splitlines()


def group(body: str, name: str = "api") -> str:
    """An upstreams section with one group whose keys are `body` (indented for you)."""
    lines = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return f"upstreams:\n  {name}:\n{lines}"


SERVER = 'servers: ["http://127.0.0.1:9001"]\n'


# --- the examples of the brief, verbatim ---------------------------------------------------


def test_bad_duration_names_the_key_path() -> None:
    assert problems(group(SERVER + "timeouts: {connect: fast}"), upstreams=False) == [
        'upstreams.api.timeouts.connect: expected a duration like "2s", got "fast"']


def test_route_to_unknown_upstream() -> None:
    assert problems("routes: [{upstream: apo}]\n", routes=False) == [
        'routes.0.upstream: unknown upstream "apo" (defined: api)']


def test_unknown_key() -> None:
    assert problems("limits: {foo: 1}\n") == ["limits.foo: unknown key"]


def test_unknown_balance_policy() -> None:
    assert problems(group(SERVER + "balance: fastest"), upstreams=False) == [
        'upstreams.api.balance: unknown policy "fastest" (choose one of round_robin, '
        "least_conn, random, p2c_ewma, hash, adaptive)"]


def test_every_problem_is_reported_at_once() -> None:
    text = (
        "listen: [abc]\n"
        "workers: 0\n"
        "limits: {foo: 1, header_timeout: soon}\n"
        "routes: [{upstream: apo}, {upstream: api, match: {path_prefix: api}}]\n"
        + group(SERVER + "balance: fastest\nretries: 11\n"
                "health_check: {interval: 1s, timeout: 2s}")
    )
    assert problems(text, routes=False, upstreams=False, source="veloxy.yaml") == [
        'veloxy.yaml: listen.0: expected HOST:PORT, got "abc"',
        'veloxy.yaml: workers: expected a number of workers >= 1 or "auto", got 0',
        'veloxy.yaml: limits.header_timeout: expected a duration like "2s", got "soon"',
        "veloxy.yaml: limits.foo: unknown key",
        'veloxy.yaml: routes.1.match.path_prefix: expected a path starting with "/", got "api"',
        'veloxy.yaml: routes.0.upstream: unknown upstream "apo" (defined: api)',
        'veloxy.yaml: upstreams.api.balance: unknown policy "fastest" (choose one of '
        "round_robin, least_conn, random, p2c_ewma, hash, adaptive)",
        "veloxy.yaml: upstreams.api.retries: expected an integer from 0 to 10, got 11",
        "veloxy.yaml: upstreams.api.health_check.interval: interval (1s) is shorter than "
        "timeout (2s)",
    ]


# --- YAML itself ---------------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("routes: [{upstream: api}\nupstreams: {}\n", "veloxy.yaml")
    assert str(info.value) == (
        "veloxy.yaml: invalid YAML at line 2, column 1: while parsing a flow sequence "
        "(line 1), expected ',' or ']', but got '<scalar>'")
    assert info.value.source == "veloxy.yaml"
    assert info.value.problems == [("", str(info.value).removeprefix("veloxy.yaml: "))]


def test_yaml_mapping_value_error() -> None:
    with pytest.raises(ConfigError, match=r"^invalid YAML at line 1, column 10: mapping values "
                                          r"are not allowed here$"):
        parse_config_text("routes: a: b\n")


def test_duplicate_upstream_name() -> None:
    text = ROUTES + group(SERVER) + "  api:\n    " + SERVER
    with pytest.raises(ConfigError) as info:
        parse_config_text(text)
    assert str(info.value) == "upstreams.api: duplicate key (line 5, column 3; first at line 3)"


def test_every_duplicate_key_is_reported() -> None:
    text = "workers: 1\nworkers: 2\nlimits: {idle_timeout: 1s, idle_timeout: 2s}\n"
    with pytest.raises(ConfigError) as info:
        parse_config_text(text + ROUTES + UPSTREAMS)
    assert info.value.problems == [
        ("workers", "duplicate key (line 2, column 1; first at line 1)"),
        ("limits.idle_timeout", "duplicate key (line 3, column 28; first at line 3)"),
    ]


def test_duplicate_key_inside_a_list_item() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("routes:\n  - upstream: api\n    upstream: web\n" + UPSTREAMS)
    assert str(info.value) == "routes.0.upstream: duplicate key (line 3, column 5; first at line 2)"


def test_merge_keys_may_override() -> None:
    text = ("defaults: &t {connect: 1s, read: 5s}\n" + ROUTES
            + group(SERVER + "timeouts: {<<: *t, read: 9s}"))
    # the merge is fine; only the unknown helper key `defaults` is refused
    assert problems(text, routes=False, upstreams=False) == ["defaults: unknown key"]


@pytest.mark.parametrize(("text", "message"), [
    ("", "the file is empty (expected a mapping with routes and upstreams)"),
    ("# only a comment\n", "the file is empty (expected a mapping with routes and upstreams)"),
    ("- a\n- b\n", "expected a mapping at the top level (with routes and upstreams), got a list"),
    ("hello\n", 'expected a mapping at the top level (with routes and upstreams), got "hello"'),
    ("a: 1\n---\nb: 2\n", "invalid YAML at line 2, column 1: expected a single document in the "
                          "stream (line 1), but found another document"),
])
def test_top_level_must_be_one_mapping(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text)
    assert str(info.value) == message


def test_parse_config_refuses_non_mappings() -> None:
    with pytest.raises(ConfigError, match="got a list"):
        parse_config([], "x.json")


# --- required keys and unknown keys ----------------------------------------------------------


def test_routes_and_upstreams_are_required() -> None:
    assert problems("{}\n", routes=False, upstreams=False) == [
        "routes: missing required key", "upstreams: missing required key"]


@pytest.mark.parametrize(("text", "expected"), [
    ("routes: []\n", "routes: expected at least one route"),
    ("routes: {upstream: api}\n", "routes: expected a list of routes, got a mapping"),
    ("routes: [{match: {path_prefix: /}}]\n", "routes.0.upstream: missing required key"),
    ("routes: [api]\n", 'routes.0: expected a mapping, got "api"'),
])
def test_route_list_rules(text: str, expected: str) -> None:
    assert problems(text, routes=False) == [expected]


@pytest.mark.parametrize(("text", "expected"), [
    ("upstreams: {}\n", "upstreams: expected at least one upstream group"),
    ("upstreams: [api]\n",
     "upstreams: expected a mapping of group names to upstream groups, got a list"),
    ("upstreams: {api: {}}\n", "upstreams.api.servers: missing required key"),
    ("upstreams: {api: {servers: []}}\n", "upstreams.api.servers: expected at least one server"),
    ('upstreams: {api: {servers: "http://a"}}\n', 'upstreams.api.servers: expected a list of '
     'server URLs like ["http://127.0.0.1:9001"], got "http://a"'),
    ("upstreams: {api: null}\n", "upstreams.api: expected a mapping, got null"),
])
def test_upstream_group_rules(text: str, expected: str) -> None:
    assert problems(text, upstreams=False) == [expected]


def test_unknown_upstream_lists_every_defined_group() -> None:
    text = ("routes: [{upstream: api}, {upstream: web}]\n" + group(SERVER)
            + "  admin:\n    " + SERVER)
    assert problems(text, routes=False, upstreams=False) == [
        'routes.1.upstream: unknown upstream "web" (defined: api, admin)']


def test_unknown_upstream_reported_even_with_other_problems() -> None:
    assert problems("workers: -1\nroutes: [{upstream: apo}]\n", routes=False) == [
        'workers: expected a number of workers >= 1 or "auto", got -1',
        'routes.0.upstream: unknown upstream "apo" (defined: api)',
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("colour: blue\n", "colour: unknown key"),
    ("upstream: {}\n", "upstream: unknown key (did you mean upstreams?)"),
    ("limits: {max_body: 1}\n", "limits.max_body: unknown key (did you mean max_body_bytes?)"),
    ("routes: [{upstream: api, strip: true}]\n", "routes.0.strip: unknown key (did you mean "
                                                 "strip_prefix?)"),
    ("routes: [{upstream: api, match: {path: /}}]\n", "routes.0.match.path: unknown key (did "
                                                      "you mean path_prefix?)"),
    ("routes: [{upstream: api, match: {verb: GET}}]\n", "routes.0.match.verb: unknown key"),
    ("source: x.yaml\n", "source: unknown key"),
])
def test_unknown_keys_everywhere(text: str, expected: str) -> None:
    routes = not text.startswith("routes")
    assert problems(text, routes=routes) == [expected]


@pytest.mark.parametrize(("body", "expected"), [
    ("name: other\n" + SERVER, "upstreams.api.name: unknown key"),
    (SERVER + "timeout: {connect: 1s}", "upstreams.api.timeout: unknown key (did you mean "
                                        "timeouts?)"),
    (SERVER + "timeouts: {write: 1s}", "upstreams.api.timeouts.write: unknown key"),
    (SERVER + "pool: {size: 1}", "upstreams.api.pool.size: unknown key"),
    (SERVER + "health_check: {url: /}", "upstreams.api.health_check.url: unknown key"),
    ('servers: [{url: "http://a", host: b}]',
     "upstreams.api.servers.0.host: unknown key"),
    ('servers: [{url: "http://a", wieght: 2}]',
     "upstreams.api.servers.0.wieght: unknown key (did you mean weight?)"),
])
def test_unknown_keys_in_groups(body: str, expected: str) -> None:
    assert problems(group(body), upstreams=False) == [expected]


def test_bad_group_name_does_not_hide_other_problems() -> None:
    text = (group('servers: ["http://a"]', name='"web api"')
            + "  api:\n    retries: -1\n    " + SERVER)
    assert problems(text, upstreams=False) == [
        'upstreams.web api: expected a group name of letters, digits, "_", "-" or ".", '
        'got "web api"',
        "upstreams.api.retries: expected an integer from 0 to 10, got -1",
    ]


# --- listen, workers, admin ----------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ('["127.0.0.1:8080"]', ["127.0.0.1:8080"]),
    ('["[::1]:8080", ":8081", "LocalHost:0"]', ["[::1]:8080", "0.0.0.0:8081", "localhost:0"]),
    ('"0.0.0.0:80"', ["0.0.0.0:80"]),
    ('[{address: "[::]:8443"}]', ["[::]:8443"]),
    ('["127.0.0.1:0", "127.0.0.1:0"]', ["127.0.0.1:0", "127.0.0.1:0"]),
])
def test_listen_accepted(value: str, expected: list[str]) -> None:
    assert [str(a) for a in config(f"listen: {value}\n").listen] == expected


def test_listen_hosts_and_ports() -> None:
    listen = config('listen: ["[::1]:8080", ":8081"]\n').listen
    assert [(a.host, a.port) for a in listen] == [("::1", 8080), ("0.0.0.0", 8081)]


@pytest.mark.parametrize(("value", "expected"), [
    ('["abc"]', 'listen.0: expected HOST:PORT, got "abc"'),
    ("[8080]", "listen.0: expected HOST:PORT, got 8080"),
    ('["::1:8080"]', 'listen.0: expected "[IPV6]:PORT" like "[::1]:8080", got "::1:8080"'),
    ('["[::1]8080"]', 'listen.0: expected "[IPV6]:PORT" like "[::1]:8080", got "[::1]8080"'),
    ('["127.0.0.1:70000"]', 'listen.0: expected a port from 0 to 65535, got "127.0.0.1:70000"'),
    ('["127.0.0.1:http"]', 'listen.0: expected a port from 0 to 65535, got "127.0.0.1:http"'),
    ('["300.1.1.1:80"]', 'listen.0: expected HOST:PORT, got "300.1.1.1:80"'),
    ('["http://127.0.0.1:80"]', 'listen.0: expected HOST:PORT without a scheme, '
                                'got "http://127.0.0.1:80"'),
    ("[]", "listen: expected at least one address to listen on"),
    ("8080", 'listen: expected a list of "HOST:PORT" addresses, got 8080'),
    ('[":80", "0.0.0.0:80"]', "listen.1: same address as listen.0 (0.0.0.0:80)"),
    ('[{address: ":443", tls: {cert: /nonexistent/a.pem}}]',
     "listen.0.tls.cert: no such file: /nonexistent/a.pem\nlisten.0.tls.key: missing required key"),
    ('[{address: ":80", h2c: "yes"}]', 'listen.0.h2c: expected true or false, got "yes"'),
    ('[{addr: ":443"}]', "listen.0.addr: unknown key (did you mean address?)\n"
                         "listen.0.address: missing required key"),
    ('[{address: "x"}]', 'listen.0.address: expected HOST:PORT, got "x"'),
])
def test_listen_rules(value: str, expected: str) -> None:
    assert problems(f"listen: {value}\n") == expected.splitlines()


@pytest.mark.parametrize(("value", "expected"), [
    ("1", 1), ("8", 8), ("auto", "auto"), ('"auto"', "auto"), ('"4"', 4)])
def test_workers_accepted(value: str, expected: object) -> None:
    assert config(f"workers: {value}\n").workers == expected


@pytest.mark.parametrize("value", ["0", "-1", "true", "1.5", "many", "null"])
def test_workers_rules(value: str) -> None:
    (line,) = problems(f"workers: {value}\n")
    assert line.startswith('workers: expected a number of workers >= 1 or "auto", got ')


def test_admin() -> None:
    assert config("").admin is None
    assert config("admin: null\n").admin is None
    assert str(config("admin: 127.0.0.1:9901\n").admin) == "127.0.0.1:9901"
    assert problems('admin: "9901"\n') == ['admin: expected HOST:PORT, got "9901"']
    assert problems('listen: [":80"]\nadmin: "0.0.0.0:80"\n') == [
        "admin: same address as listen.0 (0.0.0.0:80)"]


# --- limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "field", "expected"), [
    ("max_request_line: 100", "max_request_line", 100),
    ('max_header_bytes: "64k"', "max_header_bytes", 65536),
    ("max_body_bytes: 1m", "max_body_bytes", 1048576),
    ("max_body_bytes: null", "max_body_bytes", None),
    ("header_timeout: 250ms", "header_timeout", 0.25),
    ("header_timeout: 1.5s", "header_timeout", 1.5),
    ("idle_timeout: 2m", "idle_timeout", 120.0),
    ("idle_timeout: 1h", "idle_timeout", 3600.0),
    ("idle_timeout: 5", "idle_timeout", 5.0),
    ("idle_timeout: 0.5", "idle_timeout", 0.5),
    ("shutdown_timeout: 0", "shutdown_timeout", 0.0),
])
def test_limits_accepted(text: str, field: str, expected: object) -> None:
    value = getattr(config(f"limits: {{{text}}}\n").limits, field)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("max_request_line: 0", "limits.max_request_line: expected a size >= 1, got 0"),
    ("max_header_bytes: true", 'limits.max_header_bytes: expected a size in bytes like 65536 '
                               'or "64k", got true'),
    ("max_header_bytes: 1.5", 'limits.max_header_bytes: expected a size in bytes like 65536 '
                              'or "64k", got 1.5'),
    ("max_body_bytes: -1", 'limits.max_body_bytes: expected a size in bytes like 65536 or '
                           '"64k", got -1'),
    ("max_body_bytes: lots", 'limits.max_body_bytes: expected a size in bytes like 65536 or '
                             '"64k", got "lots"'),
    ("header_timeout: -1", "limits.header_timeout: expected a duration >= 0, got -1"),
    ("header_timeout: -2s", 'limits.header_timeout: expected a duration >= 0, got "-2s"'),
    ("header_timeout: 0", "limits.header_timeout: expected a duration > 0, got 0"),
    ("idle_timeout: true", 'limits.idle_timeout: expected a duration like "2s", got true'),
    ("idle_timeout: 2 sec", 'limits.idle_timeout: expected a duration like "2s", got "2 sec"'),
    ("idle_timeout: .inf", 'limits.idle_timeout: expected a duration like "2s", got inf'),
    ("shutdown_timeout: [1]", 'limits.shutdown_timeout: expected a duration like "2s", '
                              "got a list"),
    ("limits: 5", "limits: expected a mapping, got 5"),
])
def test_limits_rules(text: str, expected: str) -> None:
    yaml_text = f"{text}\n" if text.startswith("limits") else f"limits: {{{text}}}\n"
    assert problems(yaml_text) == [expected]


# --- routes --------------------------------------------------------------------------------


def route(match: str, extra: str = "") -> str:
    return f"routes: [{{upstream: api, match: {match}{extra}}}]\n"


@pytest.mark.parametrize(("match", "attribute", "expected"), [
    ('{host: "API.Example.com"}', "host", "api.example.com"),
    ('{host: "*.Example.com."}', "host", "*.example.com"),
    ("{host: 10.0.0.1}", "host", "10.0.0.1"),
    ("{}", "host", None),
    ("{path_prefix: /api/}", "path_prefix", "/api/"),
    ("{}", "path_prefix", "/"),
    ("{methods: [get, Post, GET]}", "methods", ("GET", "POST")),
    ("{methods: null}", "methods", None),
    ('{headers: {X-Canary: "1", Accept: "*/*"}}', "headers",
     (("x-canary", "1"), ("accept", "*/*"))),
    ("{}", "headers", ()),
])
def test_route_match_normalized(match: str, attribute: str, expected: object) -> None:
    cfg = config(route(match), routes=False)
    assert getattr(cfg.routes[0].match, attribute) == expected


def test_routes_keep_their_order_and_strip_prefix() -> None:
    cfg = config("routes:\n  - {upstream: api, match: {path_prefix: /a/}, strip_prefix: true}\n"
                 "  - {upstream: api}\n", routes=False)
    assert [(r.match.path_prefix, r.strip_prefix) for r in cfg.routes] == [
        ("/a/", True), ("/", False)]


@pytest.mark.parametrize(("match", "expected"), [
    ('{host: "api.example.com:8080"}', "routes.0.match.host: expected a host without a port, "
                                       'got "api.example.com:8080"'),
    ('{host: "*"}', 'routes.0.match.host: expected a host like "api.example.com" or '
                    '"*.example.com", got "*"'),
    ('{host: "a.*.com"}', 'routes.0.match.host: expected a host like "api.example.com" or '
                          '"*.example.com", got "a.*.com"'),
    ('{host: "http://a.com"}', 'routes.0.match.host: expected a host like "api.example.com" '
                               'or "*.example.com", got "http://a.com"'),
    ("{path_prefix: api}", 'routes.0.match.path_prefix: expected a path starting with "/", '
                           'got "api"'),
    ('{path_prefix: "/a?b=1"}', "routes.0.match.path_prefix: expected a path without query "
                                'or fragment, got "/a?b=1"'),
    ('{path_prefix: "/ü"}', "routes.0.match.path_prefix: expected an ASCII path "
                            "(percent-encode other characters, as they arrive on the wire), "
                            'got "/ü"'),
    ("{methods: GET}", "routes.0.match.methods: expected a list of methods like [GET, POST], "
                       'got "GET"'),
    ("{methods: []}", "routes.0.match.methods: expected at least one method (leave methods "
                      "out to match every method)"),
    ('{methods: [GET, "GE T", 1]}', 'routes.0.match.methods.1: expected a method name like '
                                    'GET, got "GE T"\n'
                                    "routes.0.match.methods.2: expected a method name like "
                                    "GET, got 1"),
    ("{headers: {X-Canary: 1}}", "routes.0.match.headers.X-Canary: expected a string, got 1 "
                                 "(quote it in YAML)"),
    ('{headers: {X-A: "1", x-a: "2"}}', "routes.0.match.headers.x-a: duplicate header name "
                                        "(names are case-insensitive)"),
    ('{headers: {"X A": "1"}}', 'routes.0.match.headers.X A: expected a header name, '
                                'got "X A"'),
    ('{headers: {X-A: "a\\nb"}}', "routes.0.match.headers.X-A: expected a header value of "
                                  'printable Latin-1 characters, got "a\\nb"'),
    ("{headers: [X-A]}", "routes.0.match.headers: expected a mapping of header names to "
                         'values like {X-Canary: "1"}, got a list'),
])
def test_route_match_rules(match: str, expected: str) -> None:
    assert problems(route(match), routes=False) == expected.splitlines()


def test_strip_prefix_must_be_a_bool() -> None:
    assert problems('routes: [{upstream: api, strip_prefix: "yes"}]\n', routes=False) == [
        'routes.0.strip_prefix: expected true or false, got "yes"']


def test_route_upstream_must_be_a_name() -> None:
    assert problems("routes: [{upstream: [api]}]\n", routes=False) == [
        'routes.0.upstream: expected an upstream name of letters, digits, "_", "-" or ".", '
        "got a list"]


# --- upstream servers ----------------------------------------------------------------------


@pytest.mark.parametrize(("server", "url", "host", "port", "weight"), [
    ('"http://127.0.0.1:9001"', "http://127.0.0.1:9001", "127.0.0.1", 9001, 1),
    ('"http://Backend.local"', "http://backend.local", "backend.local", 80, 1),
    ('"http://backend:80/"', "http://backend", "backend", 80, 1),
    ('"http://[::1]:9001"', "http://[::1]:9001", "::1", 9001, 1),
    ('"http://my_service:8000"', "http://my_service:8000", "my_service", 8000, 1),
    ('"https://a.example:443/"', "https://a.example", "a.example", 443, 1),
    ('"https://A.example"', "https://a.example", "a.example", 443, 1),
    ('"https://a.example:80"', "https://a.example:80", "a.example", 80, 1),
    ('{url: "http://10.0.0.2:81", weight: 5}', "http://10.0.0.2:81", "10.0.0.2", 81, 5),
])
def test_servers_accepted(server: str, url: str, host: str, port: int, weight: int) -> None:
    cfg = config(group(f"servers: [{server}]"), upstreams=False)
    (parsed,) = cfg.upstreams["api"].servers
    assert (parsed.url, parsed.host, parsed.port, parsed.weight) == (url, host, port, weight)


@pytest.mark.parametrize(("server", "expected"), [
    ('"127.0.0.1:9001"', 'servers.0: expected a URL with a scheme, got "127.0.0.1:9001" '
                         '(write "http://127.0.0.1:9001")'),
    ('"ftp://a"', 'servers.0: unsupported scheme "ftp" (http:// or https://)'),
    ('"http://"', 'servers.0: expected a host name or IP address in the URL, got "http://"'),
    ('"http://a/v1"', 'servers.0: expected no path or query beyond "/", got "http://a/v1" '
                      "(the client's path is forwarded as it is)"),
    ('"http://a/?x=1"', 'servers.0: expected no path or query beyond "/", got "http://a/?x=1" '
                        "(the client's path is forwarded as it is)"),
    ('"http://a:0"', 'servers.0: expected a port from 1 to 65535, got "http://a:0"'),
    ('"http://a:99999"', 'servers.0: expected a port from 1 to 65535, got "http://a:99999"'),
    ('"http://u:p@a"', "servers.0: credentials in upstream URLs are not supported"),
    ("9001", 'servers.0: expected a URL like "http://127.0.0.1:9001", got 9001'),
    ('{url: "http://a", weight: 0}', "servers.0.weight: expected an integer >= 1, got 0"),
    ('{url: "http://a", weight: true}', "servers.0.weight: expected an integer >= 1, got true"),
    ('{url: "http://a", weight: "2"}', 'servers.0.weight: expected an integer >= 1, got "2"'),
    ("{weight: 2}", "servers.0.url: missing required key"),
    ('"http://a", "http://A:80/"', "servers.1: same server as servers.0 (use weight to send "
                                   "it more traffic)"),
])
def test_server_rules(server: str, expected: str) -> None:
    assert problems(group(f"servers: [{server}]"), upstreams=False) == [
        "upstreams.api." + expected]


# --- group settings ------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "attribute", "expected"), [
    ("balance: least_conn", "balance", "least_conn"),
    ("balance: p2c_ewma", "balance", "p2c_ewma"),
    ("balance: hash\nhash_key: client_ip", "hash_key", "client_ip"),
    ('balance: hash\nhash_key: "header:X-User"', "hash_key", "header:x-user"),
    ('balance: hash\nhash_key: "cookie:SessionID"', "hash_key", "cookie:SessionID"),
    ("retries: 0", "retries", 0),
    ("retries: 10", "retries", 10),
    ("health_check: null", "health_check", None),
])
def test_group_settings_accepted(body: str, attribute: str, expected: object) -> None:
    cfg = config(group(SERVER + body), upstreams=False)
    assert getattr(cfg.upstreams["api"], attribute) == expected


def test_health_check_defaults_fill_in() -> None:
    cfg = config(group(SERVER + "health_check: {path: /ready}"), upstreams=False)
    check = cfg.upstreams["api"].health_check
    assert check is not None
    assert (check.path, check.interval, check.timeout) == ("/ready", 5.0, 1.0)
    assert (check.healthy_threshold, check.unhealthy_threshold) == (2, 3)


@pytest.mark.parametrize(("body", "expected"), [
    ("balance: Round_Robin", 'balance: unknown policy "Round_Robin" (choose one of '
                             "round_robin, least_conn, random, p2c_ewma, hash, adaptive)"),
    ("hash_key: ip", 'hash_key: expected client_ip, "header:NAME" or "cookie:NAME", got "ip"'),
    ('hash_key: "header:"', 'hash_key: expected client_ip, "header:NAME" or "cookie:NAME", '
                            'got "header:"'),
    ("retries: 11", "retries: expected an integer from 0 to 10, got 11"),
    ("retries: -1", "retries: expected an integer from 0 to 10, got -1"),
    ("retries: true", "retries: expected an integer from 0 to 10, got true"),
    ("timeouts: {connect: fast}", 'timeouts.connect: expected a duration like "2s", got "fast"'),
    ("timeouts: {read: 0s}", 'timeouts.read: expected a duration > 0, got "0s"'),
    ("timeouts: 5s", 'timeouts: expected a mapping, got "5s"'),
    ("pool: {max_idle: 2000}", "pool.max_idle: max_idle (2000) is larger than "
                               "max_connections (1024)"),
    ("pool: {max_connections: 8, max_idle: 9}", "pool.max_idle: max_idle (9) is larger than "
                                                "max_connections (8)"),
    ("pool: {max_connections: 0}", "pool.max_connections: expected an integer >= 1, got 0"),
    ("pool: {max_waiting: -1}", "pool.max_waiting: expected an integer >= 0, got -1"),
    ("pool: {wait_timeout: soon}", 'pool.wait_timeout: expected a duration like "2s", '
                                   'got "soon"'),
    ("health_check: {interval: 1s, timeout: 2s}", "health_check.interval: interval (1s) is "
                                                  "shorter than timeout (2s)"),
    ("health_check: {timeout: 6s}", "health_check.interval: interval (5s) is shorter than "
                                    "timeout (6s)"),
    ("health_check: {path: healthz}", 'health_check.path: expected a path starting with "/", '
                                      'got "healthz"'),
    ("health_check: {healthy_threshold: 0}", "health_check.healthy_threshold: expected an "
                                             "integer >= 1, got 0"),
    ("health_check: true", "health_check: expected a mapping, got true"),
])
def test_group_setting_rules(body: str, expected: str) -> None:
    assert problems(group(SERVER + body), upstreams=False) == ["upstreams.api." + expected]


def test_pool_settings_at_their_limits() -> None:
    cfg = config(group(SERVER + "pool: {max_connections: 4, max_idle: 4, max_waiting: 0, "
                                "wait_timeout: 0}"), upstreams=False)
    pool = cfg.upstreams["api"].pool
    assert (pool.max_connections, pool.max_idle, pool.max_waiting, pool.wait_timeout) == (
        4, 4, 0, 0.0)
