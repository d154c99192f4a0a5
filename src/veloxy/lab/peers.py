"""Peer proxies the lab can start in front of an origin: nginx, HAProxy, the Go httputil proxy.

Why here and not in benchmarks/: `veloxy suite` and benchmarks/proxy_compare.py must start the
peers the same way, or their numbers cannot be compared. Each peer is configured as a fair
opponent: one worker per `workers` (nginx `worker_processes`, HAProxy `nbthread`, Go
`GOMAXPROCS`), keep-alive upstream pools large enough for every client connection, access
logs off, timeouts long enough that a benchmark never hits them.

With `tls` (a TLS scenario) every peer terminates TLS with the same certificate and offers
HTTP/2 and HTTP/1.1 by ALPN: nginx `listen ... ssl http2`, HAProxy `bind ... ssl crt ... alpn
h2,http/1.1`, the Go peer `-cert`/`-key` (net/http serves HTTP/2 over TLS by itself).

`peer_command` returns what to run (argv, env, a log pattern that means ready) or a string
saying why the peer cannot run here (not installed, config check failed); the caller skips
that target with the message and goes on.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
#: The Go peer's source: benchmarks/peers/goproxy of the repository (src layout).
GOPROXY_SRC = Path(__file__).resolve().parents[3] / "benchmarks" / "peers" / "goproxy"
PEERS = ("nginx", "haproxy", "go", "go-default", "go-tuned", "go-bufpool")


def nginx_common(workdir: Path, tag: str, workers: int = 1) -> str:
    """The top of an nginx config: foreground, private temp and pid paths, no access log."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    tmp = workdir / f"{tag}-tmp"
    tmp.mkdir(exist_ok=True)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    paths = "\n".join(f"    {k}_temp_path {tmp}/{k};" for k in kinds)
    return f"""worker_processes {workers};
daemon off;
master_process on;
pid {workdir}/{tag}.pid;
error_log {workdir}/{tag}-error.log warn;
worker_rlimit_nofile {nofile};
events {{
    worker_connections {max(1024, nofile - 256)};
}}
http {{
    access_log off;
{paths}
    keepalive_requests 100000000;
    keepalive_timeout 3600s;
"""


def nginx_origin_conf(workdir: Path, port: int, body: str, stub_path: str,
                      sized: tuple[int, ...] = ()) -> str:
    """nginx as an origin answering every request with `body` (no characters special to
    nginx's config syntax), plus stub_status at `stub_path`. For each size in `sized`,
    `/?size=N` answers a file of N bytes instead (written to `workdir`), the URL
    `veloxy origin` answers with N bytes too."""
    files = workdir / "origin-bodies"
    routes = ""
    if sized:
        # nginx's workers run as nobody when started as root: they must reach the files
        os.chmod(workdir, os.stat(workdir).st_mode | 0o111)
        files.mkdir(exist_ok=True)
        files.chmod(0o755)
    for size in sized:
        (files / str(size)).write_bytes(b"x" * size)
        (files / str(size)).chmod(0o644)
        routes += f"""            if ($arg_size = "{size}") {{
                rewrite ^ /__sized/{size} last;
            }}
"""
    sized_location = f"""        location /__sized/ {{
            internal;
            alias {files}/;
            default_type text/plain;
        }}
""" if sized else ""
    return nginx_common(workdir, "origin") + f"""    server {{
        listen {HOST}:{port} backlog=4096;
        location = {stub_path} {{
            stub_status;
        }}
{sized_location}        location / {{
{routes}            default_type text/plain;
            return 200 "{body[:-1]}\\n";
        }}
    }}
}}
"""


def nginx_proxy_conf(workdir: Path, port: int, origin_port: int, keepalive: int,
                     workers: int = 1, tag: str = "nginx-proxy",
                     tls: TlsFiles | None = None) -> str:
    # `listen ... ssl http2` is the form nginx 1.22 (Debian 12) knows; 1.25+ warns and
    # accepts it
    listen = f"{HOST}:{port} backlog=4096" + (" ssl http2" if tls else "")
    certificate = f"""        ssl_certificate {tls.cert};
        ssl_certificate_key {tls.key};
        ssl_protocols TLSv1.2 TLSv1.3;
""" if tls else ""
    return nginx_common(workdir, tag, workers) + f"""    upstream origin {{
        server {HOST}:{origin_port};
        keepalive {keepalive};
        keepalive_requests 100000000;
        keepalive_timeout 3600s;
    }}
    server {{
        listen {listen};
{certificate}        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def haproxy_conf(port: int, origin_port: int, threads: int = 1,
                 tls: TlsFiles | None = None) -> str:
    # HAProxy wants 2 fds per connection plus a margin and refuses to start otherwise.
    maxconn = max(256, min(65536, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 500) // 2))
    return f"""global
    nbthread {threads}
    maxconn {maxconn}

defaults
    mode http
    maxconn {maxconn}
    timeout connect 5s
    timeout client 3600s
    timeout server 3600s
    timeout http-keep-alive 3600s
    http-reuse always

frontend fe
    bind {HOST}:{port}{f" ssl crt {tls.combined} alpn h2,http/1.1" if tls else ""}
    default_backend be

backend be
    server origin {HOST}:{origin_port} pool-purge-delay 3600s
"""


def build_goproxy(src: Path = GOPROXY_SRC) -> tuple[Path | None, str]:
    """Build the Go peer into a cache dir keyed by source hash; (binary, message)."""
    h = hashlib.sha256()
    try:
        for name in ("main.go", "go.mod"):
            h.update((src / name).read_bytes())
    except OSError:
        return None, f"the Go peer's source is not at {src}"
    go = shutil.which("go")
    if go:
        h.update(subprocess.run([go, "version"], capture_output=True, text=True).stdout.encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "veloxy-bench"
    binary = cache / f"goproxy-{h.hexdigest()[:16]}"
    if binary.exists():
        return binary, f"cached {binary}"
    if not go:
        return None, "go is not installed and no cached goproxy binary exists"
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOPROXY="off", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    r = subprocess.run([go, "build", "-o", str(binary), "."], cwd=src, env=env,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return None, f"go build failed: {r.stderr.strip()[-500:]}"
    return binary, f"built {binary}"


@dataclass(frozen=True)
class TlsFiles:
    """One certificate for every target of a run: PEM files, and the CA that signed it (for
    the generator to verify with)."""

    cert: Path  # the chain, leaf first
    key: Path
    combined: Path  # chain then key, as HAProxy's `crt` wants it
    ca: Path


def make_tls_files(workdir: Path) -> TlsFiles | str:
    """A throwaway CA and a certificate for 127.0.0.1 and localhost in `workdir` (trustme),
    or why not."""
    try:
        import trustme
    except ImportError:
        return "TLS scenarios make their certificate with trustme: pip install trustme"
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(workdir / "tls-cert.pem", workdir / "tls-key.pem",
                     workdir / "tls-combined.pem", workdir / "tls-ca.pem")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(files.combined))
    leaf.private_key_pem.write_to_path(str(files.key))
    files.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    ca.cert_pem.write_to_path(str(files.ca))
    for path in (files.cert, files.key, files.combined, files.ca):
        path.chmod(0o644)  # nginx's workers read them as nobody when started as root
    return files


@dataclass(frozen=True)
class PeerCommand:
    argv: list[str]
    env: dict[str, str] | None
    ready_pattern: str | None


def peer_command(kind: str, workdir: Path, port: int, origin_port: int, *, workers: int = 1,
                 connections: int = 1024, tls: TlsFiles | None = None) -> PeerCommand | str:
    """How to start peer `kind` on `port` in front of the origin, or why it cannot run.

    kind: nginx, haproxy, go (= go-tuned), go-default, go-tuned, go-bufpool."""
    if kind.startswith("go"):
        binary, msg = build_goproxy()
        if binary is None:
            return msg
        argv = [str(binary), "-listen", f"{HOST}:{port}", "-upstream",
                f"http://{HOST}:{origin_port}"]
        if kind in ("go", "go-tuned", "go-bufpool"):
            argv.append("-tuned")
        if kind == "go-bufpool":
            argv.append("-bufpool")
        if tls:
            argv += ["-cert", str(tls.cert), "-key", str(tls.key)]
        return PeerCommand(argv, dict(os.environ, GOMAXPROCS=str(workers)),
                           r"goproxy listening on")
    if kind == "nginx":
        if not shutil.which("nginx"):
            return "nginx is not installed"
        conf = workdir / f"nginx-proxy-{port}.conf"
        keepalive = max(1024, connections + 64)
        conf.write_text(nginx_proxy_conf(workdir, port, origin_port, keepalive, workers,
                                         tag=f"nginx-proxy-{port}", tls=tls))
        return PeerCommand(["nginx", "-p", str(workdir), "-e",
                            str(workdir / f"nginx-proxy-{port}-error.log"), "-c", str(conf)],
                           None, None)
    if kind == "haproxy":
        if not shutil.which("haproxy"):
            return "haproxy is not installed"
        conf = workdir / f"haproxy-{port}.cfg"
        conf.write_text(haproxy_conf(port, origin_port, workers, tls))
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(conf)], capture_output=True,
                               text=True)
        if check.returncode != 0:
            return f"haproxy config check failed: {(check.stdout + check.stderr).strip()[-400:]}"
        return PeerCommand(["haproxy", "-db", "-f", str(conf)], None, None)
    return f"unknown peer {kind!r}"
