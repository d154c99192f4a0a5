"""Upstream groups: the servers behind a route and how one is chosen for each request.

`group.Group` holds a group's servers (`endpoint.Endpoint`: an address, its connection pool from
`pool.py`, its load and failure numbers), the selector of `balance.py` built over the ones
that may take traffic, active health checks (`health.py`), passive ejection, and DNS
re-resolution (`discovery.py`). The proxy asks `group.balancer.pick(...)` per request and
reports each attempt's outcome to its server; everything else happens on events.
"""
