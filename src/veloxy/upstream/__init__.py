"""Upstream groups: per-server connection pools, load-balancing selectors, and the
immutable group snapshot the router hands to each request."""
