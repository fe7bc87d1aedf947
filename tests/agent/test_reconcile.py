"""Reconciling discovery with the ledger: every row and every device lands in exactly one category."""

from __future__ import annotations

import json

from agent.ledger import LedgerCamera
from agent.reconcile import KnownIdentity, reconcile
from agent.wsdiscovery import Discovered


def row(n: int, host: str) -> LedgerCamera:
    return LedgerCamera(camera_id=f"mapo-{n:05d}", host=host)


def dev(host: str, urn: str, name: str | None = None) -> Discovered:
    return Discovered(
        host, urn, (f"http://{host}/onvif/device_service",), (), ("NetworkVideoTransmitter",), name
    )


LEDGER = [row(1, "127.60.7.1"), row(2, "127.60.7.2"), row(3, "127.60.7.3"), row(4, "127.60.7.4")]


def test_first_run_matches_by_address() -> None:
    found = {"127.60.7.1": dev("127.60.7.1", "urn:uuid:a"), "127.60.7.2": dev("127.60.7.2", "urn:uuid:b")}
    found["127.60.7.9"] = dev("127.60.7.9", "urn:uuid:new", name="Unknown cam")
    result = reconcile(LEDGER, found)
    assert [(m.camera_id, m.endpoint) for m in result.matched] == [
        ("mapo-00001", "urn:uuid:a"),
        ("mapo-00002", "urn:uuid:b"),
    ]
    assert [(u.address, u.endpoint, u.name) for u in result.found_not_in_ledger] == [
        ("127.60.7.9", "urn:uuid:new", "Unknown cam")
    ]
    assert result.in_ledger_not_found == ["mapo-00003", "mapo-00004"]
    assert result.moved == []


def test_a_known_camera_at_a_new_address_is_moved_not_merged() -> None:
    known = {
        "mapo-00001": KnownIdentity(endpoint="urn:uuid:a"),
        "mapo-00003": KnownIdentity(endpoint="urn:uuid:c"),
    }
    # Camera 1 moved to .3 (which the ledger gives to camera 3); camera 3 is gone.
    found = {"127.60.7.3": dev("127.60.7.3", "URN:UUID:A"), "127.60.7.2": dev("127.60.7.2", "urn:uuid:b")}
    result = reconcile(LEDGER, found, known=known)
    assert len(result.moved) == 1
    moved = result.moved[0]
    assert (moved.camera_id, moved.old_address, moved.new_address) == (
        "mapo-00001",
        "127.60.7.1",
        "127.60.7.3",
    )
    assert moved.ledger_id_at_new_address == "mapo-00003"
    assert [m.camera_id for m in result.matched] == ["mapo-00002"]
    assert result.in_ledger_not_found == ["mapo-00003", "mapo-00004"]
    assert LEDGER[0].host == "127.60.7.1"  # the ledger is reported on, never rewritten


def test_mac_identity_from_enumeration_recognises_a_moved_camera() -> None:
    known = {"mapo-00002": KnownIdentity(device="mac-1234")}
    found = {"127.60.7.50": dev("127.60.7.50", "urn:uuid:reflashed")}  # new urn after a factory reset
    result = reconcile(LEDGER, found, known=known, found_devices={"127.60.7.50": "MAC-1234"})
    assert [(m.camera_id, m.new_address, m.ledger_id_at_new_address) for m in result.moved] == [
        ("mapo-00002", "127.60.7.50", None)
    ]


def test_another_device_at_a_known_cameras_address_is_not_matched() -> None:
    known = {"mapo-00004": KnownIdentity(endpoint="urn:uuid:d")}
    found = {"127.60.7.4": dev("127.60.7.4", "urn:uuid:stranger")}
    result = reconcile(LEDGER, found, known=known)
    assert result.matched == []
    assert [(u.endpoint, u.ledger_id_at_address) for u in result.found_not_in_ledger] == [
        ("urn:uuid:stranger", "mapo-00004")
    ]
    assert "mapo-00004" in result.in_ledger_not_found


def test_identities_of_different_kinds_do_not_conflict() -> None:
    # We only know camera 4's MAC; the device at its address gave a urn we never saw: same camera.
    known = {"mapo-00004": KnownIdentity(device="mac-4444")}
    result = reconcile(LEDGER, {"127.60.7.4": dev("127.60.7.4", "urn:uuid:d")}, known=known)
    assert [m.camera_id for m in result.matched] == ["mapo-00004"]


def test_every_row_and_device_is_accounted_for_once() -> None:
    ledger = [row(n, f"127.60.8.{n}") for n in range(1, 101)]
    known = {f"mapo-{n:05d}": KnownIdentity(endpoint=f"urn:uuid:{n}") for n in range(1, 101)}
    found = {f"127.60.8.{n}": dev(f"127.60.8.{n}", f"urn:uuid:{n}") for n in range(1, 61)}
    found["127.60.8.200"] = dev("127.60.8.200", "urn:uuid:70")  # camera 70 moved
    found["127.60.8.201"] = dev("127.60.8.201", "urn:uuid:x")  # a stranger
    result = reconcile(ledger, found, known=known)
    ids = (
        [m.camera_id for m in result.matched]
        + [m.camera_id for m in result.moved]
        + result.in_ledger_not_found
    )
    assert sorted(ids) == sorted(c.camera_id for c in ledger)
    summary = result.summary()
    assert summary["counts"] == {
        "matched": 60,
        "moved": 1,
        "found_not_in_ledger": 1,
        "in_ledger_not_found": 39,
    }
    assert "127.60.8" not in json.dumps(summary)  # addresses stay out unless asked for
    assert "127.60.8.200" in json.dumps(result.summary(include_addresses=True))


def test_hostnames_and_ip_spelling_compare_canonically() -> None:
    ledger = [LedgerCamera(camera_id="mapo-00001", host="Cam1.District.Local.")]
    found = {"cam1.district.local": dev("cam1.district.local", "urn:uuid:a")}
    assert [m.camera_id for m in reconcile(ledger, found).matched] == ["mapo-00001"]
