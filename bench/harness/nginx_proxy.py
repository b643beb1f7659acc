"""nginx in front of several server processes, for the scenarios that measure a deployment
rather than one process: WebSockets balanced with ``least_conn`` as deploy/nginx.conf does,
without its per-address abuse limits (every benchmark client comes from one address)."""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

from bench.harness.procs import LOAD_CORE, OPEN_FILES, Processes
from testsupport.processes import Process, wait_for_port
from testsupport.system import free_port

HOST = "127.0.0.1"
WORKERS = 4


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found is None:
        raise RuntimeError("nginx not found: install Debian's nginx package (.ci/run does)")
    return found


def config(port: int, upstream_ports: list[int], workdir: Path) -> str:
    """``WORKERS`` workers (the harness pins them to the load core, beside the load
    generator) sharing the connections by ``reuseport``: a client takes two sockets of a
    worker, whose open files may be capped low (20,000 on the benchmark machine). The
    WebSocket upgrade passed on; ``least_conn`` counted across workers (``zone``)."""
    servers = "".join(f"        server {HOST}:{up};\n" for up in upstream_ports)
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = workdir / "temp"
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    return f"""{user}worker_processes {WORKERS};
worker_rlimit_nofile {files};
daemon off;
pid "{workdir / "nginx.pid"}";
error_log "{workdir / "error.log"}" warn;
events {{
    worker_connections {files - 100};
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path "{temp}";
    proxy_temp_path "{temp}";
    fastcgi_temp_path "{temp}";
    uwsgi_temp_path "{temp}";
    scgi_temp_path "{temp}";
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream servers {{
        zone servers 256k;
        least_conn;
{servers}    }}
    server {{
        listen {HOST}:{port} backlog=16384 reuseport;
        location / {{
            proxy_pass http://servers;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }}
    }}
}}
"""


def start(procs: Processes, upstream_ports: list[int]) -> tuple[Process, int]:
    """nginx listening on a free port in front of ``upstream_ports``, once it accepts."""
    workdir = procs.log_dir / f"nginx-{len(procs.started) + 1}"
    (workdir / "temp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(config(port, upstream_ports, workdir))
    proc = procs.start(
        "nginx", [nginx_binary(), "-c", str(conf), "-p", str(workdir)], core=LOAD_CORE
    )
    wait_for_port(proc, port)
    return proc, port
