"""The platform API in process for request/response tests: a real store (SQLite or PostgreSQL), real token
verification against a JWKS file, the example agency policy, a command signer, the nearest-camera index and
an adjustable clock, served as an ASGI app over httpx."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from agent.clips.manifest import build_manifest, manifest_json, sign_manifest
from collector.access.gate import Access
from collector.access.settings import AccessSettings
from collector.access.tokens import issue_token
from collector.commands.signing import CommandSigner
from collector.config import LiveSettings, PlatformSettings
from collector.index.store import Batch, Store, open_store
from collector.platform.api import create_app
from collector.platform.context import Platform
from collector.platform.manifests import ClipObjects
from collector.platform.nearby import CameraIndex
from collector.platform.stores import ThreadStores
from common.signing import load_or_create_key
from contract.messages import AnyMessage, ClipUpdate
from tests.collector.conftest import AUDIENCE, ISSUER, POLICY, agent, meta, status, write_jwks

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

# Real places (lat, lon) and the district their polygon puts them in.
GANGNAM_OFFICE = (37.5172, 127.0473)
SEOLLEUNG = (37.5045, 127.0490)  # about 1.4 km south of the office
SAMSEONG = (37.5088, 127.0631)
MAPO_OFFICE = (37.5663, 126.9019)
INCHEON = (37.4563, 126.7052)  # outside Seoul

CAMERAS: dict[str, tuple[str, tuple[float, float]]] = {
    "gn-office": ("gangnam", GANGNAM_OFFICE),
    "gn-office-2": ("gangnam", (37.5175, 127.0476)),  # about 40 m north-east of the office
    "gn-seolleung": ("gangnam", SEOLLEUNG),
    "gn-samseong": ("gangnam", SAMSEONG),
    "mp-office": ("mapo", MAPO_OFFICE),
}


def seed(store: Store) -> None:
    messages: list[AnyMessage] = [agent(), agent("mapo", "agent-mapo")]
    for camera_id, (district, (lat, lon)) in CAMERAS.items():
        agent_id = f"agent-{district}"
        messages += [
            meta(camera_id, district=district, agent_id=agent_id, lat=lat, lon=lon),
            status(camera_id, "online", 0, district=district, agent_id=agent_id),
        ]
    batch = Batch()
    for m in messages:
        batch.add(m)
    store.apply(batch)


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    client: httpx.AsyncClient
    platform: Platform
    clock: Clock
    idp_key: Path
    signer: CommandSigner
    store: Store
    notified: list[int] = field(default_factory=list)

    def token(
        self, agency: str = "police-112", role: str = "operator", sub: str = "officer-kim", **kw: Any
    ) -> str:
        args: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "ttl_s": 600, **kw}
        return issue_token(self.idp_key, sub=sub, agency=agency, role=role, **args)

    def auth(
        self, agency: str = "police-112", role: str = "operator", sub: str = "officer-kim"
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(agency, role, sub)}"}

    def audit(self) -> list[dict[str, Any]]:
        """The audit trail as stored, oldest first."""
        with self.store.reading() as tx:
            rows = tx.query(
                "SELECT action, result, code, account, agency, incident, subjects FROM audit_log ORDER BY seq"
            )
        keys = ("action", "result", "code", "account", "agency", "incident", "subjects")
        return [{**dict(zip(keys, r, strict=True)), "subjects": json.loads(r[6])} for r in rows]

    def outbox(self) -> list[dict[str, Any]]:
        """Queued commands, decoded, oldest first."""
        with self.store.reading() as tx:
            rows = tx.query("SELECT kind, payload FROM command_outbox ORDER BY created_at, request_id")
        return [{"kind": k, **json.loads(p)} for k, p in rows]


@asynccontextmanager
async def harness(
    tmp_path: Path,
    store_url: str,
    *,
    policy: Path = POLICY,
    objects: ClipObjects | None = None,
    settings: PlatformSettings | None = None,
    live: LiveSettings | None = None,
) -> AsyncIterator[Harness]:
    store = open_store(store_url)
    store.migrate()
    seed(store)
    idp_key, jwks = write_jwks(tmp_path)
    access = Access.from_settings(
        AccessSettings(jwks_file=jwks, issuer=ISSUER, audience=AUDIENCE, policy_file=policy)
    )
    clock = Clock(time.time())
    signer = CommandSigner(tmp_path / "commands.key", 600, clock)
    cameras = CameraIndex(lambda: open_store(store_url), 3600)
    cameras.refresh(store)
    stores = ThreadStores(lambda: open_store(store_url))
    notified: list[int] = []
    p = Platform(
        stores,
        dict,
        settings or PlatformSettings(),
        access=access,
        cameras=cameras,
        signer=signer,
        notify_outbox=lambda: notified.append(1),
        objects=objects,
        clock=clock,
        live=live or LiveSettings(),
    )
    transport = httpx.ASGITransport(app=create_app(p))
    async with httpx.AsyncClient(transport=transport, base_url="http://platform.test") as client:
        yield Harness(client, p, clock, idp_key, signer, store, notified)
    stores.close()
    store.close()


def upload_clip(
    s3: S3Client, bucket: str, clip: dict[str, Any], agent_key: Path, sha256: str | None = None
) -> tuple[bytes, ClipUpdate]:
    """What a district agent does with a requested clip (of the API's `clip`): upload it, its thumbnail and
    its manifest signed with `agent_key`; returns the data and the ClipUpdate it then reports (`sha256`: a
    different digest to report than the manifest's)."""
    data, thumb = b"\x00\x00\x00\x18ftypisom" + b"video" * 1000, b"\xff\xd8jpeg\xff\xd9"
    base = f"gangnam/{clip['camera_id']}/{clip['clip_id']}"
    keys = {"clip": f"{base}.mp4", "thumbnail": f"{base}.jpg", "manifest": f"{base}.manifest.json"}
    start, end = datetime.fromisoformat(clip["start"]), datetime.fromisoformat(clip["end"])
    digest = hashlib.sha256(data).hexdigest()
    manifest = build_manifest(
        camera={"id": clip["camera_id"]},
        district="gangnam",
        request_id=clip["clip_id"],
        agency="police-112",
        incident=clip["incident_id"],
        purpose="identify the suspect's escape route",
        requested=(start, end),
        covered=(start, end),
        wallclock_source="rtcp",
        clock_offset_s=0.0,
        agent_id="agent-gangnam",
        software_version="test",
        objects=keys,
        clip=(digest, len(data)),
        thumbnail=(hashlib.sha256(thumb).hexdigest(), len(thumb)),
        complete=True,
    )
    signed = manifest_json(sign_manifest(manifest, load_or_create_key(agent_key)))
    for key, body in ((keys["clip"], data), (keys["thumbnail"], thumb), (keys["manifest"], signed)):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    update = ClipUpdate(
        district="gangnam",
        request_id=clip["clip_id"],
        camera_id=clip["camera_id"],
        agent_id="agent-gangnam",
        status="succeeded",
        object_key=keys["clip"],
        thumbnail_key=keys["thumbnail"],
        manifest_key=keys["manifest"],
        size_bytes=len(data),
        sha256=sha256 or digest,
        covered_start=start,
        covered_end=end,
        source="preroll",
        sent_at=datetime.now(UTC),
    )
    return data, update
