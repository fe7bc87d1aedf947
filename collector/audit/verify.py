"""`cctv-collector audit verify`: does the audit chain still hold, and does it agree with every checkpoint?

Order matters: the checkpoints are read first, then the head, then the chain, so records appended meanwhile
only make the chain longer than what it is compared with. Each problem names the first record it makes
untrustworthy:
- a record whose hash does not match its content was changed (or moved: the hash covers its seq);
- a gap in seq is a removed record; a record that does not chain onto its predecessor was rewritten;
- a checkpoint or the head beyond the chain's end is a cut tail;
- a checkpoint whose hash differs from the chain's at its seq is a rewritten chain: the first record that
  cannot be vouched for is the one after the newest checkpoint that still agrees.
A chain may start after seq 1 only at a signed checkpoint boundary (records pruned after their retention).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.audit.chain import GENESIS, Entry, Head, entries, head
from collector.audit.checkpoints import Checkpoint, CheckpointBucket, CheckpointError
from collector.audit.links import Problem, entry_problem
from collector.index.store import Store

MAX_LISTED = 100


@dataclass
class Verdict:
    records: int = 0
    first: int | None = None
    last: Head = field(default_factory=lambda: Head(0, GENESIS))
    checkpoints: int = 0
    newest_checkpoint: int | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        on_records = [p for p in self.problems if p.seq is not None]
        return min(on_records, key=lambda p: p.seq or 0) if on_records else None

    def as_dict(self) -> dict[str, Any]:
        first_bad = self.first_bad
        newest = self.newest_checkpoint or 0
        return {
            "ok": self.ok,
            "records": self.records,
            "first_seq": self.first,
            "last_seq": self.last.seq,
            "last_hash": self.last.hash,
            "checkpoints": self.checkpoints,
            "newest_checkpoint_seq": self.newest_checkpoint,
            "unanchored_records": max(0, self.last.seq - newest),
            "first_bad": None if first_bad is None else {"seq": first_bad.seq, "reason": first_bad.reason},
            "problems": [{"seq": p.seq, "reason": p.reason} for p in self.problems[:MAX_LISTED]],
            "problem_count": len(self.problems),
        }


def verify(store: Store, bucket: CheckpointBucket, trusted: dict[str, Ed25519PublicKey]) -> Verdict:
    """Raises CheckpointError when the bucket cannot be read and StoreError when the store cannot."""
    verdict = Verdict()
    checkpoints = _checkpoints(bucket, trusted, verdict)
    recorded_head = head(store)
    wanted = {c.seq for c in checkpoints} | {recorded_head.seq}
    hashes = _walk(entries(store), checkpoints, wanted, verdict)
    _check_head(recorded_head, hashes, verdict)
    _check_checkpoints(checkpoints, hashes, verdict)
    return verdict


def _checkpoints(
    bucket: CheckpointBucket, trusted: dict[str, Ed25519PublicKey], verdict: Verdict
) -> list[Checkpoint]:
    try:
        bucket.check()
    except CheckpointError as exc:
        if exc.reason != "no_object_lock":
            raise
        verdict.problems.append(Problem(None, str(exc)))
    valid = []
    for stored in bucket.read_all(trusted):
        if stored.checkpoint is None:
            verdict.problems.append(
                Problem(None, f"{stored.key} (version {stored.version_id}): {stored.problem}")
            )
        else:
            valid.append(stored.checkpoint)
    verdict.checkpoints = len(valid)
    verdict.newest_checkpoint = max((c.seq for c in valid), default=None)
    return valid


def _walk(
    chain: Iterable[Entry], checkpoints: list[Checkpoint], wanted: set[int], verdict: Verdict
) -> dict[int, str]:
    """Check every record against its predecessor; the hashes at the `wanted` seqs."""
    anchors = {(c.seq, c.hash) for c in checkpoints}
    hashes: dict[int, str] = {0: GENESIS}
    prev = Head(0, GENESIS)
    for entry in chain:
        if verdict.first is None:
            verdict.first = entry.seq
            if (entry.seq - 1, entry.prev_hash) in anchors:  # pruned up to a signed boundary
                prev = Head(entry.seq - 1, entry.prev_hash)
                hashes[prev.seq] = prev.hash
        problem = entry_problem(prev, entry)
        if problem is not None:
            verdict.problems.append(problem)
        if entry.seq in wanted:
            hashes[entry.seq] = entry.hash
        verdict.records += 1
        prev = Head(entry.seq, entry.hash)
    verdict.last = prev
    return hashes


def _check_head(recorded: Head, hashes: dict[int, str], verdict: Verdict) -> None:
    if recorded.seq > verdict.last.seq:
        verdict.problems.append(
            Problem(
                verdict.last.seq + 1,
                f"tail cut: the head records seq {recorded.seq} but the chain ends at seq {verdict.last.seq}",
            )
        )
    elif hashes.get(recorded.seq) != recorded.hash:
        verdict.problems.append(
            Problem(max(recorded.seq, 1), f"the head's hash differs from the chain's at seq {recorded.seq}")
        )


def _check_checkpoints(checkpoints: list[Checkpoint], hashes: dict[int, str], verdict: Verdict) -> None:
    end = verdict.last.seq
    if end and not checkpoints:
        verdict.problems.append(Problem(None, "no valid checkpoint: a cut tail or a rewrite would go unseen"))
    agreeing = sorted(c.seq for c in checkpoints if hashes.get(c.seq) == c.hash)
    for c in sorted(checkpoints, key=lambda c: c.seq):
        taken = datetime.fromtimestamp(c.at, UTC).isoformat(timespec="seconds")
        if c.seq > end:
            verdict.problems.append(
                Problem(
                    end + 1,
                    f"tail cut: the checkpoint of {taken} covers seq {c.seq}, the chain ends at {end}",
                )
            )
        elif c.seq not in hashes:
            verdict.problems.append(
                Problem(c.seq, f"seq {c.seq}, checkpointed at {taken}, is not in the chain")
            )
        elif hashes[c.seq] != c.hash:
            vouched = max((s for s in agreeing if s < c.seq), default=0)
            verdict.problems.append(
                Problem(
                    vouched + 1,
                    f"chain rewritten: its hash at seq {c.seq} differs from the checkpoint of {taken}; "
                    f"records up to seq {vouched} agree with the checkpoints",
                )
            )
