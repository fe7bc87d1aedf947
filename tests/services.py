"""Real local services for tests, benchmarks and the demo: a Mosquitto broker, a Ceph S3 gateway and a
Prometheus server.

Both wrap the scripts in deploy/dev/ (which a person can also run by hand), keep everything in a directory
the caller owns, listen on 127.0.0.1 only and stop by pid. Usage:

    broker = Mosquitto().start(tmp_dir / "mqtt")      # ~25 ms
    s3 = CephS3().start(tmp_dir / "ceph")             # a few seconds; needs root
    s3.client().put_object(Bucket=..., Key=..., Body=b"...")
    s3.stop(); broker.stop()

Both are also context managers that stop the service on exit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import boto3
from botocore.config import Config

from common.s3 import gateway_config
from tests.tls_certs import write_test_certs

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_SCRIPTS = REPO_ROOT / "deploy" / "dev"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still take it)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def s3_client_config() -> Config:
    """botocore settings for the Ceph gateway (common.s3)."""
    return gateway_config()


def _run_script(script: str, *args: str, timeout_s: float, env: dict[str, str] | None = None) -> None:
    """Run a deploy/dev script; raise RuntimeError with its output (which carries the log tail) on failure."""
    cmd = [str(DEV_SCRIPTS / script), *args]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ | (env or {}), check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(cmd)} did not finish within {timeout_s} s") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def _read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _is_dead(pid: int) -> bool:
    """True once the process is gone or a zombie (orphans are reaped late by init here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


class _Service:
    """Shared lifecycle: a directory of state, a start script, stop on context exit."""

    def __init__(self) -> None:
        self._dir: Path | None = None

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._dir

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Mosquitto(_Service):
    """A Mosquitto 2.x broker with persistence in its directory (saved every second and at exit)."""

    host = LOOPBACK

    def __init__(self) -> None:
        super().__init__()
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("Mosquitto is not started")
        return self._port

    @property
    def pid(self) -> int:
        return int((self.directory / "mosquitto.pid").read_text())

    @property
    def tls_port(self) -> int:
        """The TLS listener's port (a broker started with tls=True); clients trust `ca_file`."""
        return int(_read_env_file(self.directory / "mqtt.env")["MQTT_TLS_PORT"])

    @property
    def ca_file(self) -> Path:
        return self.directory / "tls" / "ca.crt"

    def start(self, tmpdir: Path | str, port: int | None = None, tls: bool = False) -> Self:
        """Start (or, with the same directory, start again keeping retained messages and sessions). With
        `tls`, also a TLS listener (`tls_port`) with a certificate for 127.0.0.1 from a throwaway CA."""
        directory = Path(tmpdir)
        if tls and not (directory / "tls" / "server.crt").exists():
            write_test_certs(directory / "tls")
        # A free port can be taken by another process before the broker binds it: try a few fresh ones.
        for attempt in range(1 if port is not None else 3):
            chosen = port if port is not None else free_port()
            try:
                _run_script("mosquitto.sh", "start", str(directory), str(chosen), timeout_s=20)
                break
            except RuntimeError:
                if port is not None or attempt == 2:
                    raise
        # The port the broker listens on, as the script wrote it (a broker already running in this directory
        # keeps its own port, whatever was asked).
        self._dir, self._port = directory, int(_read_env_file(directory / "mqtt.env")["MQTT_PORT"])
        log.debug("mosquitto up on %s:%s in %s", self.host, self._port, directory)
        return self

    def stop(self, graceful: bool = True) -> None:
        """Graceful: SIGTERM, the broker saves its database and exits (~0.1 s). Otherwise SIGKILL, for
        teardown of a broker whose directory is thrown away. A no-op when not running."""
        if self._dir is None:
            return
        if not graceful and self._running():
            self.kill()
        _run_script("mosquitto.sh", "stop", str(self._dir), timeout_s=30)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port with the same persistence."""
        self.stop()
        self.start(self.directory, self.port)

    def _running(self) -> bool:
        pid_file = self.directory / "mosquitto.pid"
        return pid_file.exists() and not _is_dead(int(pid_file.read_text()))

    def kill(self) -> None:
        """SIGKILL the broker (no final save) and wait until it is dead; restart() brings it back."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _is_dead(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto pid {pid} survived SIGKILL for 10 s")
            time.sleep(0.005)


class CephS3(_Service):
    """A single-node Ceph cluster (mon, memstore OSD, radosgw) with one S3 user. Needs root."""

    def __init__(self) -> None:
        super().__init__()
        self._env: dict[str, str] = {}

    @property
    def endpoint(self) -> str:
        return self._setting("S3_ENDPOINT")

    @property
    def access_key(self) -> str:
        return self._setting("S3_ACCESS_KEY")

    @property
    def secret_key(self) -> str:
        return self._setting("S3_SECRET_KEY")

    @property
    def region(self) -> str:
        return self._setting("S3_REGION")

    @property
    def env(self) -> dict[str, str]:
        """S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY and S3_REGION, e.g. for a subprocess's environment."""
        return dict(self._env)

    def start(self, tmpdir: Path | str, port: int | None = None, timeout_s: float = 120) -> Self:
        directory = Path(tmpdir)
        extra = {"S3_PORT": str(port)} if port is not None else {}
        began = time.monotonic()
        try:
            _run_script("ceph-s3.sh", "start", str(directory), timeout_s=timeout_s, env=extra)
        except RuntimeError:
            _run_script("ceph-s3.sh", "stop", str(directory), timeout_s=60)  # leave no daemon behind
            raise
        self._dir = directory
        self._env = _read_env_file(directory / "s3.env")
        log.info("ceph s3 gateway up at %s in %.1f s", self.endpoint, time.monotonic() - began)
        return self

    def stop(self) -> None:
        """Stop every daemon of this cluster and wait until they are gone. A no-op when not running."""
        if self._dir is not None:
            _run_script("ceph-s3.sh", "stop", str(self._dir), timeout_s=60)
            self._env = {}

    def client(self) -> S3Client:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=s3_client_config(),
        )

    def _setting(self, key: str) -> str:
        if key not in self._env:
            raise RuntimeError("CephS3 is not started")
        return self._env[key]


class Prometheus(_Service):
    """A Prometheus server (Debian's `prometheus`) scraping its jobs every second and evaluating our rule
    files every second. Its config is written as JSON, which is YAML too."""

    def __init__(self) -> None:
        super().__init__()
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, tmpdir: Path | str, jobs: dict[str, list[str]], rule_files: list[Path]) -> Self:
        directory = Path(tmpdir)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
            ],
        }
        (directory / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.port = free_port()
        with open(directory / "prometheus.log", "wb") as out:
            self._proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address={LOOPBACK}:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._dir = directory
        deadline = time.monotonic() + 20
        while not self._ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (directory / "prometheus.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prometheus did not become ready:\n{tail}")
            time.sleep(0.05)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:  # noqa: S310 - loopback
                return bool(resp.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer, RuntimeError otherwise."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:  # noqa: S310
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
