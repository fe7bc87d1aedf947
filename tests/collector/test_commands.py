"""Commands to agents: the collector's signature, and the outbox rows on both engines (no broker)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.commands.outbox import enqueue
from collector.commands.signing import CommandSigner
from collector.index.store import Batch, Store, StoreError
from common.signing import load_public_key, signature_problem, signed_body
from contract.codec import decode, encode
from contract.messages import ArmRequest, ClipRequest
from tests.collector.conftest import clip

NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)


def clip_request(request_id: str = "req-1", district: str = "gangnam", **kw: Any) -> ClipRequest:
    fields: dict[str, Any] = {
        "camera_id": "cam-1",
        "start": NOW - timedelta(seconds=30),
        "end": NOW,
        "purpose": "missing child search",
        "agency": "police-112",
        "incident": "inc-7",
        "priority": "112",
        "service": "112-video",
        "sent_at": NOW,
    }
    return ClipRequest(district=district, request_id=request_id, **{**fields, **kw})


def arm_request(request_id: str = "arm-1") -> ArmRequest:
    return ArmRequest(
        district="gangnam", request_id=request_id, camera_id="cam-2", duration_s=600, agency="police-112",
        incident="inc-7", service="112-video", sent_at=NOW,
    )  # fmt: skip


@pytest.fixture
def signer(tmp_path: Path) -> CommandSigner:
    return CommandSigner(tmp_path / "keys" / "commands.key", ttl_s=600, clock=NOW.timestamp)


def trusted(signer: CommandSigner) -> dict[str, Any]:
    """What a district configures: the collector's public key, as `commands public-key` prints it."""
    return {signer.key_id: load_public_key(signer.public_pem())}


# -- signing ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [clip_request(), arm_request()], ids=["clip", "arm"])
def test_a_signed_command_verifies_as_the_agent_receives_it(
    signer: CommandSigner, command: ClipRequest | ArmRequest
) -> None:
    signed = signer.sign(command)
    delivery = encode(signed)
    received = decode(delivery.topic, delivery.payload)
    assert received == signed
    assert received.expires_at == NOW + timedelta(seconds=600)
    assert signature_problem(signed_body(received), received.signature, trusted(signer)) is None


def test_a_changed_command_or_another_key_fails_verification(signer: CommandSigner, tmp_path: Path) -> None:
    signed = signer.sign(clip_request())
    widened = signed.model_copy(update={"start": NOW - timedelta(hours=1)})
    assert signature_problem(signed_body(widened), widened.signature, trusted(signer)) == "signature invalid"
    prolonged = signed.model_copy(update={"expires_at": NOW + timedelta(days=1)})
    problem = signature_problem(signed_body(prolonged), prolonged.signature, trusted(signer))
    assert problem == "signature invalid"
    other = CommandSigner(tmp_path / "other.key", ttl_s=600)
    problem = signature_problem(signed_body(signed), signed.signature, trusted(other))
    assert problem == f"signed by unknown key {signer.key_id}"


def test_the_key_is_created_private_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "commands.key"
    first = CommandSigner(path, ttl_s=60)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = CommandSigner(path, ttl_s=60)
    assert again.key_id == first.key_id
    assert again.public_pem() == first.public_pem()


# -- the outbox rows ----------------------------------------------------------------------------------------
def outbox(store: Store) -> dict[str, tuple[Any, ...]]:
    with store.transaction() as tx:
        rows = tx.query(
            "SELECT request_id, kind, district, topic, payload, expires_at, answered_at, answer_status "
            "FROM command_outbox"
        )
    return {r[0]: r[1:] for r in rows}


def ingest(store: Store, *updates: Any) -> None:
    batch = Batch()
    for update in updates:
        batch.add(update)
    store.apply(batch)


def test_enqueue_writes_the_signed_command_for_its_district(store: Store, signer: CommandSigner) -> None:
    signed = signer.sign(clip_request())
    with store.transaction() as tx:
        enqueue(tx, signed)
        enqueue(tx, signer.sign(arm_request()))
    rows = outbox(store)
    kind, district, topic, payload, expires_at, answered_at, status = rows["req-1"]
    assert (kind, district, topic) == ("clip", "gangnam", "cctv/v1/gangnam/cmd/clip")
    assert decode(topic, payload.encode()) == signed
    assert expires_at == (NOW + timedelta(seconds=600)).timestamp()
    assert (answered_at, status) == (None, None)
    assert rows["arm-1"][:3] == ("arm", "gangnam", "cctv/v1/gangnam/cmd/arm")


def test_enqueue_in_a_rolled_back_transaction_leaves_nothing(store: Store, signer: CommandSigner) -> None:
    with pytest.raises(StoreError), store.transaction() as tx:
        enqueue(tx, signer.sign(clip_request()))
        tx.execute("INSERT INTO no_such_table VALUES (1)")  # the request's own row fails: all is undone
    assert outbox(store) == {}


def test_an_unsigned_command_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="not signed"), store.transaction() as tx:
        enqueue(tx, clip_request())
    assert outbox(store) == {}


def test_the_first_clip_update_answers_the_command(store: Store, signer: CommandSigner) -> None:
    with store.transaction() as tx:
        enqueue(tx, signer.sign(clip_request("req-1")))
        enqueue(tx, signer.sign(clip_request("req-2")))
    ingest(store, clip("req-1", "accepted", 1))
    ingest(store, clip("req-1", "succeeded", 2))
    rows = outbox(store)
    assert rows["req-1"][6] == "accepted"
    assert rows["req-1"][5] is not None
    assert rows["req-2"][5:] == (None, None)


def test_another_district_cannot_answer_a_command(store: Store, signer: CommandSigner) -> None:
    with store.transaction() as tx:
        enqueue(tx, signer.sign(clip_request("req-1", district="jongno")))
    ingest(store, clip("req-1", "failed", 1))  # gangnam's agent, same request id
    assert outbox(store)["req-1"][5:] == (None, None)


def test_an_answer_after_expiry_is_recorded(store: Store, signer: CommandSigner) -> None:
    with store.transaction() as tx:
        enqueue(tx, signer.sign(clip_request("req-1")))
        tx.execute("UPDATE command_outbox SET answered_at = 1, answer_status = 'expired'")
    ingest(store, clip("req-1", "failed", 1, reason="command_expired"))
    assert outbox(store)["req-1"][6] == "failed"
