"""Proxying: the router compiled from config, and the forwarding state machine of one
request (proxy/forward.py) that joins a client connection to an upstream connection."""
