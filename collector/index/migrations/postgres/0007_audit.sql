-- The PIPA audit trail (collector/audit/chain.py): one row per audited action, hash-chained. `audit_head` is
-- the one row every append locks (SELECT ... FOR UPDATE) and moves, so appends are serialised.
-- The genesis hash (prev_hash of seq 1) is 64 zeros.
CREATE TABLE audit_log (
  seq BIGINT PRIMARY KEY,
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

-- Append-only: the application never changes, deletes or truncates a record. Someone who owns the table can
-- disable these triggers; the hash chain and the signed checkpoints are what make that visible.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
