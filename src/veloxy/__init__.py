"""veloxy: a fast HTTP reverse proxy with its own load generator and performance lab."""

__version__ = "0.1.0"
