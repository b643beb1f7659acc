"""Run the real nginx with the deployment's site config (deploy/nginx.conf) in tests.

``Nginx(port, (upstream_1, upstream_2), static_root, workdir).start()`` renders the site
config the way the nginx image's envsubst step does, wraps it in a top-level config whose
pid, logs and temp files all live in ``workdir``, and runs nginx in the foreground.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE_TEMPLATE = ROOT / "deploy" / "nginx.conf"

# The dollar-brace placeholders of the template (nginx's own variables have no braces).
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def nginx_binary() -> str | None:
    """The nginx executable, or None if it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def render_site_config(values: dict[str, str]) -> str:
    """deploy/nginx.conf with ``${NAME}`` replaced for each given name (like ``envsubst``
    with a list of variables: nginx's ``$variables`` are left alone).

    Raises ValueError if a ``${...}`` placeholder is left without a value.
    """
    text = SITE_TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise ValueError(f"{SITE_TEMPLATE} needs values for: {', '.join(left)}")
    return text


class Nginx:
    """nginx on ``port`` in front of two upstreams (``host:port`` or ``unix:/path``),
    serving ``static_root`` at /static/; its config, pid, logs and temp files in ``workdir``.
    """

    def __init__(
        self,
        port: int,
        upstreams: tuple[str, str],
        static_root: str | Path,
        workdir: Path,
    ) -> None:
        self.port = port
        self.upstreams = upstreams
        self.static_root = Path(static_root)
        self.workdir = Path(workdir)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    def write_config(self) -> Path:
        """Write site.conf (the rendered template) and the top-level nginx.conf including it;
        the path of the latter."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        site = render_site_config(
            {
                "NGINX_PORT": str(self.port),
                "DAPHNE_1": self.upstreams[0],
                "DAPHNE_2": self.upstreams[1],
                "STATIC_ROOT": str(self.static_root).rstrip("/") or "/",
            }
        )
        (self.workdir / "site.conf").write_text(site)
        temp = self.workdir / "temp"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (temp / name).mkdir(parents=True, exist_ok=True)
        # As root the workers would run as "nobody" and could not read the tests' 0700
        # directories; as anyone else nginx ignores the user directive (with a warning).
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.config_path.write_text(
            f"""{user}worker_processes 1;
pid "{self.pid_file}";
error_log "{self.error_log}" info;

events {{
    worker_connections 256;
}}

http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log "{self.access_log}";
    client_body_temp_path "{temp}/client_body";
    proxy_temp_path "{temp}/proxy";
    fastcgi_temp_path "{temp}/fastcgi";
    uwsgi_temp_path "{temp}/uwsgi";
    scgi_temp_path "{temp}/scgi";
    include "{self.workdir}/site.conf";
}}
"""
        )
        return self.config_path

    def _argv(self, *extra: str) -> list[str]:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        # -e: the log for messages before the config is read (the compiled-in default,
        # /var/log/nginx/error.log, may not be writable).
        return [
            binary,
            "-p",
            str(self.workdir),
            "-e",
            str(self.error_log),
            "-c",
            str(self.config_path),
            *extra,
        ]

    def check_config(self) -> str:
        """``nginx -t`` on the written config: its output, or RuntimeError with it."""
        self.write_config()
        result = subprocess.run(
            self._argv("-t"), capture_output=True, text=True, timeout=30, check=False
        )
        output = result.stdout + result.stderr
        if result.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{output}")
        return output

    def start(self, timeout: float = 10) -> Nginx:
        """Run nginx; return once the port accepts connections, or raise RuntimeError with
        nginx's error log."""
        if self.process is not None:
            raise RuntimeError("nginx is already started")
        self.write_config()
        self.pid_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            self._argv("-g", "daemon off;"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group, so stop() can kill the workers with the master.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"nginx exited with {code}:\n{self.read_error_log()}")
            # nginx writes its pid file only after binding its port, so a connection
            # accepted by some other program on that port is not taken for nginx.
            if self.pid_file.exists():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return self
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"nginx did not listen on {self.port} within {timeout} s:\n"
                    f"{self.read_error_log()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10) -> None:
        """Terminate nginx (SIGTERM: fast shutdown, the master stops its workers); if it
        does not exit in time, SIGKILL its process group (a killed master leaves workers)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def read_error_log(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no error log)"

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
