"""Routing: host + path_prefix rules in order, strip_prefix rewriting the path."""

from __future__ import annotations

import pytest

from tests.support.backends import path_script
from tests.support.client import Client

pytestmark = [pytest.mark.timeout(30), pytest.mark.process]


@pytest.fixture(scope="module")
def routed_proxy(module_stack):
    make_backend, start_proxy = module_stack
    api = make_backend(path_script(), name="api")
    svc = make_backend(path_script(), name="svc")
    web = make_backend(path_script(), name="web")
    config = {
        "listen": ["127.0.0.1:0"],
        "limits": {"shutdown_timeout": "3s"},
        "routes": [
            {"match": {"host": "api.example.com", "path_prefix": "/api/"}, "upstream": "api",
             "strip_prefix": False},
            {"match": {"path_prefix": "/svc/"}, "upstream": "svc", "strip_prefix": True},
            {"match": {"path_prefix": "/"}, "upstream": "web"},
        ],
        "upstreams": {
            "api": {"servers": [api.url], "timeouts": {"connect": "2s", "response_header": "5s",
                                                       "read": "5s"}},
            "svc": {"servers": [svc.url]},
            "web": {"servers": [web.url]},
        },
    }
    return start_proxy(config=config), api


def routed(proxy, host: str, target: str) -> bytes:
    with Client(proxy.port) as c:
        resp = c.request("GET", target, host=host)
    assert resp.status == 200, resp
    return resp.body


def test_host_and_path_prefix_route(routed_proxy):
    proxy, api = routed_proxy
    assert routed(proxy, "api.example.com", "/api/users?id=7") == b"api /api/users?id=7"
    assert routed(proxy, "api.example.com", "/other") == b"web /other"
    assert routed(proxy, "www.example.com", "/api/users") == b"web /api/users"
    assert routed(proxy, "api.example.com", "/apiary") == b"web /apiary"
    assert routed(proxy, "www.example.com", "/") == b"web /"
    assert api.requests and all(r.target.startswith("/api/") for r in api.requests)


def test_strip_prefix_rewrites_path(routed_proxy):
    proxy, _ = routed_proxy
    assert routed(proxy, "h.example", "/svc/users?x=1") == b"svc /users?x=1"
    assert routed(proxy, "h.example", "/svc/v2/items/9") == b"svc /v2/items/9"
    assert routed(proxy, "api.example.com", "/svc/a") == b"svc /a"
    assert routed(proxy, "h.example", "/static/app.js") == b"web /static/app.js"
