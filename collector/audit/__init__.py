"""The PIPA audit trail: an append-only hash chain, signed checkpoints in WORM storage, verify, reports."""
