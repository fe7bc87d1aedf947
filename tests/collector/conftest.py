"""Collector fixtures: a throwaway PostgreSQL for the session and a migrated store on either engine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from collector.access.tokens import issue_token, jwks_for
from collector.index.store import Store, open_store
from common.signing import key_id, load_or_create_key
from contract.messages import AgentState, CameraMeta, CameraStatus, ClipUpdate, HealthEntry, HealthSnapshot
from tests.collector.pg import PgService, available
from tests.services import Mosquitto, free_port

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = Path(__file__).resolve().parents[2] / "deploy" / "policy.example.toml"
ISSUER, AUDIENCE = "https://idp.test.example", "cctv-platform"


@pytest.fixture(scope="session")
def pg_service() -> Iterator[PgService]:
    if not available():
        pytest.skip("PostgreSQL 15 server binaries (Debian postgresql-15) or root are missing")
    with PgService().start() as pg:
        yield pg


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'index.db'}"
    pg: PgService = request.getfixturevalue("pg_service")
    return pg.new_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    s.migrate()
    yield s
    s.close()


def start_collector_process(
    tmp_path: Path,
    broker: Mosquitto,
    stderr: int | None = None,
    store_url: str | None = None,
    ingest: str = "",
    *,
    extra: str = "",
) -> tuple[subprocess.Popen[bytes], int, int]:
    """`cctv-collector run` in its own process, on `store_url` (default: a SQLite index in `tmp_path`), with a
    config written there (`ingest`: lines of its [ingest] section; `extra`: more sections) and the example
    agency policy, trusting the identity provider whose tokens `api_headers(tmp_path)` mints; returns the
    process, its HTTP API port and its metrics port (the caller waits for what it needs)."""
    http_port, metrics_port = free_port(), free_port()
    cfg = tmp_path / "collector.toml"
    url = store_url or f"sqlite://{tmp_path / 'run.db'}"
    _, jwks = write_jwks(tmp_path)
    cfg.write_text(
        f"metrics_port = {metrics_port}\n[mqtt]\nport = {broker.port}\n"
        f'[store]\nurl = "{url}"\n[http]\nport = {http_port}\n[ingest]\n{ingest}\n'
        f'[access]\njwks_file = "{jwks}"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
        f'policy_file = "{POLICY}"\n[commands]\nkey_file = "{tmp_path / "commands.key"}"\n{extra}\n'
    )
    code = "import sys; from collector.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "run", "--config", str(cfg)], stderr=stderr)
    return proc, http_port, metrics_port


def write_jwks(directory: Path) -> tuple[Path, Path]:
    """A test identity provider in `directory`: its signing key (idp.key) and the JWKS that publishes it."""
    key_path = directory / "idp.key"
    key = load_or_create_key(key_path)
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps(jwks_for(key.public_key(), key_id(key.public_key()))))
    return key_path, jwks


def api_headers(
    tmp_path: Path, agency: str = "platform-ops", role: str = "platform", sub: str = "ops-test"
) -> dict[str, str]:
    """An Authorization header from the identity provider a collector started in `tmp_path` trusts."""
    token = issue_token(
        tmp_path / "idp.key", sub=sub, agency=agency, role=role, iss=ISSUER, aud=AUDIENCE, ttl_s=600
    )
    return {"Authorization": f"Bearer {token}"}


def wait_until(check: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll `check` until it holds; fail the test naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def forced(message: BaseModel, **fields: object) -> BaseModel:
    """`message` with values the contract refuses, built without validation (only the index can refuse it)."""
    return type(message).model_construct(**{**dict(message), **fields})


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def agent(
    district: str = "gangnam",
    agent_id: str = "agent-gangnam",
    minutes: float = 0,
    *,
    state: str = "online",
    session: int = 1,
) -> AgentState:
    return AgentState(district=district, agent_id=agent_id, state=state, session=session, sent_at=at(minutes))


def meta(
    camera_id: str, district: str = "gangnam", agent_id: str = "agent-gangnam", **kw: object
) -> CameraMeta:
    fields: dict[str, object] = {
        "name": f"{camera_id} crossing",
        "manufacturer": "Hanwha",
        "model": "XNO-6080R",
        "identity": f"mac:{camera_id}",
        "identity_kind": "mac",
        "updated_at": at(0),
    }
    fields.update(kw)
    return CameraMeta(district=district, camera_id=camera_id, agent_id=agent_id, **fields)


def status(
    camera_id: str,
    state: str,
    minutes: float,
    reasons: list[str] | None = None,
    *,
    district: str = "gangnam",
    agent_id: str = "agent-gangnam",
) -> CameraStatus:
    return CameraStatus(
        district=district,
        camera_id=camera_id,
        agent_id=agent_id,
        state=state,
        reasons=reasons or [],
        since=at(minutes),
        checked_at=at(minutes),
    )


def health(
    entries: dict[str, str], minutes: float, district: str = "gangnam", agent_id: str = "agent-gangnam"
) -> HealthSnapshot:
    return HealthSnapshot(
        district=district,
        agent_id=agent_id,
        taken_at=at(minutes),
        cameras=[HealthEntry(camera_id=c, state=s, checked_at=at(minutes)) for c, s in entries.items()],
    )


def clip(
    request_id: str, status_name: str, minutes: float, camera_id: str = "cam-1", **kw: object
) -> ClipUpdate:
    return ClipUpdate(
        district="gangnam",
        request_id=request_id,
        camera_id=camera_id,
        agent_id="agent-gangnam",
        status=status_name,
        sent_at=at(minutes),
        **kw,
    )
