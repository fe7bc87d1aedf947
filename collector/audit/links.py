"""The record-by-record checks of the audit chain, shared by `audit verify` (verify.py, the whole chain
against the checkpoints) and the checkpointer (checkpoints.py, which checks what it is about to anchor)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from collector.audit.chain import GENESIS, Entry, Head, chain_hash


@dataclass(frozen=True)
class Problem:
    seq: int | None  # the first record it concerns; None for a problem of the bucket
    reason: str


def entry_problem(prev: Head, entry: Entry) -> Problem | None:
    """What is wrong with `entry` as the successor of `prev`, if anything."""
    return gap_problem(prev, entry) or content_problem(entry) or link_problem(prev, entry)


def check_since(prev: Head, chain: Iterable[Entry], until: int) -> tuple[Head, Problem | None]:
    """Check the records that follow `prev` up to seq `until`; the last record checked and the first problem
    (None: all good). A chain read from the genesis may start after seq 1: records pruned after their
    retention, which only `audit verify` can vouch for against the signed checkpoints."""
    for entry in chain:
        if entry.seq > until:
            break
        if prev.seq == 0 and prev.hash == GENESIS and entry.seq > 1:
            prev = Head(entry.seq - 1, entry.prev_hash)
        problem = entry_problem(prev, entry)
        if problem is not None:
            return prev, problem
        prev = Head(entry.seq, entry.hash)
    return prev, None


def gap_problem(prev: Head, entry: Entry) -> Problem | None:
    if entry.seq == prev.seq + 1:
        return None
    gone = f"{prev.seq + 1}" if entry.seq == prev.seq + 2 else f"{prev.seq + 1} to {entry.seq - 1}"
    return Problem(prev.seq + 1, f"record removed: seq {gone} missing before seq {entry.seq}")


def link_problem(prev: Head, entry: Entry) -> Problem | None:
    """A consistent record chained to another hash than its predecessor's: the predecessor was rewritten
    (changed with a recomputed hash), or the genesis was replaced."""
    if entry.prev_hash == prev.hash:
        return None
    return Problem(
        max(prev.seq, 1),
        f"record rewritten: seq {entry.seq} was chained to another hash than seq {prev.seq}'s",
    )


def content_problem(entry: Entry) -> Problem | None:
    if entry.problem is not None:
        return Problem(entry.seq, f"record changed: {entry.problem}")
    if chain_hash(entry.prev_hash, entry.document) != entry.hash:
        return Problem(entry.seq, "record changed: its hash does not match its content or position")
    return None
