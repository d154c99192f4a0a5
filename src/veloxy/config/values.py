"""Scalar value parsers shared by the config file, the command line and other commands.

Why a module of its own: the same words ("2s", "16k", "127.0.0.1:8080") are typed in a YAML
file, on the command line (`veloxy bench -d 10s`) and in URLs (`?size=16k`), and they must mean
the same thing everywhere. Each parser takes the raw value, returns the normalized Python value,
and raises `ValueError` whose message reads like a person wrote it: "expected X, got Y". The
pydantic models (model.py) call these same functions, so a message never depends on where the
value came from.

Nothing here imports pydantic or touches the network: these are pure functions.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "check_bind_host",
    "check_port",
    "format_address",
    "format_duration",
    "is_token",
    "parse_bind_address",
    "parse_duration",
    "parse_hash_key",
    "parse_route_host",
    "parse_size",
    "parse_upstream_url",
    "parse_workers",
    "show",
]


def show(value: object) -> str:
    """Render a value the way it looked in the YAML file, for "got ..." in messages.

    Strings keep their quotes so that `"2 s"` and `2` are told apart; containers are named
    rather than dumped (a whole mapping in a one-line message helps nobody).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


# --- durations -------------------------------------------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_DURATION_EXAMPLE = 'expected a duration like "2s"'


def parse_duration(value: object) -> float:
    """Parse a duration into float seconds.

    Accepted: a number of seconds (int or float, not bool), a string of a number with a unit
    ("250ms", "2s", "1.5s", "1m", "1h"), several such parts ("1m30s", as Go writes them), or a
    bare number in a string ("10" = 10 seconds, so `-d 10` works on the command line).
    Negative, infinite and NaN values are refused: every duration in veloxy is a wait.

    >>> parse_duration("1m30s"), parse_duration("250ms"), parse_duration(2)
    (90.0, 0.25, 2.0)
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{_DURATION_EXAMPLE}, got {show(value)}")
    if isinstance(value, str):
        text = value.strip().lower()
        seconds = _parse_duration_text(text)
        if seconds is None:
            if text.startswith("-") and _parse_duration_text(text[1:]) is not None:
                raise ValueError(f"expected a duration >= 0, got {show(value)}")
            raise ValueError(f"{_DURATION_EXAMPLE}, got {show(value)}")
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{_DURATION_EXAMPLE}, got {show(value)}")
    if seconds < 0:
        raise ValueError(f"expected a duration >= 0, got {show(value)}")
    return seconds


def _parse_duration_text(text: str) -> float | None:
    if not text:
        return None
    try:
        return float(text) if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", text) else _sum_parts(text)
    except ValueError:
        return None


def _sum_parts(text: str) -> float | None:
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def format_duration(seconds: float) -> str:
    """The shortest duration string that `parse_duration` reads back to the same float.

    >>> format_duration(0.25), format_duration(1.0), format_duration(90.0), format_duration(3600)
    ('250ms', '1s', '90s', '1h')
    """
    if seconds == 0:
        return "0s"
    if float(seconds).is_integer():
        whole = int(seconds)
        if whole % 3600 == 0:
            return f"{whole // 3600}h"
        if whole % 60 == 0:
            return f"{whole // 60}m"
        return f"{whole}s"
    millis = seconds * 1000
    if seconds < 1 and float(millis).is_integer() and int(millis) / 1000 == seconds:
        return f"{int(millis)}ms"
    return f"{seconds!r}s"


# --- sizes -----------------------------------------------------------------------------------

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?)(i?b)?")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: object) -> int:
    """Parse a byte count: an int, or a string such as "100", "16k", "1kb", "1KiB", "1m", "2g".

    Units are binary (k = 1024), as in nginx and wrk: "16k" is 16384 bytes. Case does not
    matter. The result must be a whole number of bytes >= 0 ("1.5k" = 1536 is fine, "0.5" is
    not).

    >>> parse_size("16k"), parse_size("1kb"), parse_size(100)
    (16384, 1024, 100)
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'expected a size like "16k", got {show(value)}')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a size >= 0, got {show(value)}")
        return value
    match = _SIZE.fullmatch(value.strip().lower())
    if match is None:
        raise ValueError(f'expected a size like "16k", got {show(value)}')
    number = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if not number.is_integer():
        raise ValueError(f"expected a whole number of bytes, got {show(value)}")
    return int(number)


# --- workers ---------------------------------------------------------------------------------


def parse_workers(value: object) -> int | Literal["auto"]:
    """An int >= 1, a string of digits (from the command line) or "auto"."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit() and int(text) >= 1:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f'expected a number of workers >= 1 or "auto", got {show(value)}')


# --- hosts and addresses ---------------------------------------------------------------------

# Letters, digits, "-" and "_" (container service names such as "my_api" use it) per label.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _check_hostname(host: str) -> str | None:
    """Lowercased host name or IPv4 address without a trailing dot, or None if invalid."""
    host = host.lower().removesuffix(".")
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        return None
    if all(label.isdigit() for label in host.split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return None
    return host


def _check_ipv6(host: str) -> str | None:
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        return None


def parse_bind_address(value: object) -> tuple[str, int]:
    """Parse "HOST:PORT" for a listening socket into (host, port).

    "[::1]:8080" is IPv6 (the host is returned without brackets); ":8080" means every IPv4
    interface (host "0.0.0.0"). Port 0 is allowed: the kernel picks a free port, which is
    what tests want.
    """
    expected = "expected HOST:PORT"
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {show(value)}")
    text = value.strip()
    if "://" in text:
        raise ValueError(f"expected HOST:PORT without a scheme, got {show(value)}")
    if text.startswith("["):
        close = text.find("]")
        host = _check_ipv6(text[1:close]) if close > 0 else None
        rest = text[close + 1:] if close > 0 else ""
        if host is None or not rest.startswith(":"):
            raise ValueError(f'expected "[IPV6]:PORT" like "[::1]:8080", got {show(value)}')
        port_text = rest[1:]
    else:
        host_text, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{expected}, got {show(value)}")
        if ":" in host_text:
            raise ValueError(f'expected "[IPV6]:PORT" like "[::1]:8080", got {show(value)}')
        checked = _check_hostname(host_text) if host_text else "0.0.0.0"
        if checked is None:
            raise ValueError(f"{expected}, got {show(value)}")
        host = checked
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected a port from 0 to 65535, got {show(value)}")
    return host, int(port_text)


def check_bind_host(value: object) -> str:
    """Validate the host part of a listening address (used when built in code)."""
    if isinstance(value, str):
        checked = _check_ipv6(value) if ":" in value else _check_hostname(value)
        if checked is not None:
            return checked
    raise ValueError(f"expected a host name or IP address, got {show(value)}")


def check_port(value: object, *, lowest: int = 0) -> int:
    """An int port in lowest..65535 (0 only for listening: the kernel picks one)."""
    if isinstance(value, int) and not isinstance(value, bool) and lowest <= value <= 65535:
        return value
    raise ValueError(f"expected a port from {lowest} to 65535, got {show(value)}")


def format_address(host: str, port: int) -> str:
    """ "host:port", with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_route_host(value: object) -> str:
    """A route's host: exact ("api.example.com") or a leading wildcard ("*.example.com").

    Lowercased, trailing dot removed, no port (the router compares the Host header without its
    port). The wildcard stands for one or more labels and does not match the bare domain.
    """
    expected = 'expected a host like "api.example.com" or "*.example.com"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {show(value)}")
    text = value.strip()
    bare = text.removeprefix("*.")
    name, colon, port = bare.rpartition(":")
    if colon and port.isdigit() and _check_hostname(name):
        raise ValueError(f"expected a host without a port, got {show(value)}")
    checked = _check_hostname(bare)
    if checked is None:
        raise ValueError(f"{expected}, got {show(value)}")
    return "*." + checked if text.startswith("*.") else checked


# --- upstream URLs ---------------------------------------------------------------------------


def parse_upstream_url(value: object) -> tuple[str, str, int]:
    """Parse an upstream server URL into (normalized url, host, port).

    "http://HOST[:PORT][/]" or "https://...": the proxy forwards the client's path as it is,
    so a path in the server URL would be silently ignored; it is refused instead. The port
    defaults to 80 (443 for https) and is left out of the normalized URL when it is that.
    """
    example = 'expected a URL like "http://127.0.0.1:9001"'
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{example}, got {show(value)}")
    text = value.strip()
    if "://" not in text:
        raise ValueError(f'expected a URL with a scheme, got {show(value)} '
                         f'(write "http://{text}")')
    scheme = text.partition("://")[0].lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {show(scheme)} (http:// or https://)")
    default_port = 443 if scheme == "https" else 80
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"expected a port from 1 to 65535, got {show(value)}") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in upstream URLs are not supported")
    raw_host = parts.hostname or ""
    host = _check_ipv6(raw_host) if ":" in raw_host else _check_hostname(raw_host)
    if not host:
        raise ValueError(f"expected a host name or IP address in the URL, got {show(value)}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f'expected no path or query beyond "/", got {show(value)} '
                         "(the client's path is forwarded as it is)")
    if port is None:
        port = default_port
    if port == 0:
        raise ValueError(f"expected a port from 1 to 65535, got {show(value)}")
    authority = format_address(host, port) if port != default_port else (
        f"[{host}]" if ":" in host else host)
    return f"{scheme}://{authority}", host, port


# --- hash keys -------------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 section 5.6.2


def is_token(text: str) -> bool:
    """An RFC 9110 token (method names, header field names)."""
    return bool(_TOKEN.fullmatch(text))


def parse_hash_key(value: object) -> str:
    """"client_ip", "header:NAME" (name lowercased) or "cookie:NAME" (name kept as written)."""
    expected = 'expected client_ip, "header:NAME" or "cookie:NAME"'
    if isinstance(value, str):
        kind, sep, name = value.strip().partition(":")
        if not sep and kind == "client_ip":
            return "client_ip"
        if sep and kind == "header" and is_token(name):
            return f"header:{name.lower()}"
        if sep and kind == "cookie" and is_token(name):
            return f"cookie:{name}"
    raise ValueError(f"{expected}, got {show(value)}")
