-- The PIPA audit trail (collector/audit/chain.py): one row per audited action, hash-chained. `audit_head` is
-- the one row every append reads and moves, so appends are serialised (SQLite: BEGIN IMMEDIATE already is).
-- The genesis hash (prev_hash of seq 1) is 64 zeros.
CREATE TABLE audit_log (
  seq INTEGER PRIMARY KEY,
  at DOUBLE PRECISION NOT NULL,
  account TEXT NOT NULL,
  agency TEXT NOT NULL,
  client_ip TEXT NOT NULL,
  action TEXT NOT NULL,
  purpose TEXT NOT NULL,
  incident TEXT,
  subjects TEXT NOT NULL,
  result TEXT NOT NULL,
  code TEXT NOT NULL,
  detail TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE audit_head (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  seq BIGINT NOT NULL,
  hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only: the application never changes or deletes a record. Someone who owns the database can drop these
-- triggers; the hash chain and the signed checkpoints are what make that visible.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
