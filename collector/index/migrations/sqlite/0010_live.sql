-- Live view sessions (collector/live/) and the segments their agents announced (LiveUpdate). Times are epoch
-- seconds. A segment's `msn` is its HLS media sequence number: consecutive per session in the order listed
-- (the agent's `sequence` may jump after segments it could not deliver); `discontinuities` counts the
-- EXT-X-DISCONTINUITY tags up to and including this segment (for EXT-X-DISCONTINUITY-SEQUENCE).
CREATE TABLE live_sessions (
  session_id TEXT PRIMARY KEY,
  incident_id TEXT NOT NULL REFERENCES incidents (incident_id),
  camera_id TEXT NOT NULL,
  district TEXT NOT NULL,
  agency TEXT NOT NULL,
  account TEXT NOT NULL,
  stream TEXT NOT NULL,
  purpose TEXT NOT NULL,
  service TEXT NOT NULL,
  state TEXT NOT NULL,  -- starting, live, stopped
  stop_reason TEXT,
  created_at DOUBLE PRECISION NOT NULL,
  until_at DOUBLE PRECISION NOT NULL,  -- ends on its own then unless renewed
  last_fetch_at DOUBLE PRECISION NOT NULL,  -- the last playlist fetch (or the start)
  first_segment_at DOUBLE PRECISION,
  stopped_at DOUBLE PRECISION,
  segments INTEGER NOT NULL DEFAULT 0,  -- listed so far: the next segment's msn
  discontinuities INTEGER NOT NULL DEFAULT 0,
  last_sequence INTEGER,
  target_s INTEGER NOT NULL DEFAULT 1  -- EXT-X-TARGETDURATION so far
);
-- What the reaper scans (the sessions not yet stopped) and the per-agency limit counts.
CREATE INDEX live_sessions_active ON live_sessions (agency) WHERE state <> 'stopped';

CREATE TABLE live_segments (
  session_id TEXT NOT NULL REFERENCES live_sessions (session_id),
  msn INTEGER NOT NULL,
  sequence INTEGER NOT NULL,
  object_key TEXT NOT NULL,
  init_key TEXT NOT NULL,
  started_at DOUBLE PRECISION NOT NULL,
  duration_s DOUBLE PRECISION NOT NULL,
  size_bytes BIGINT NOT NULL,
  discontinuity BOOLEAN NOT NULL,
  discontinuities INTEGER NOT NULL,
  listed_at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (session_id, msn)
);
-- What the janitor deletes after the retention.
CREATE INDEX live_segments_listed ON live_segments (listed_at);

-- Live commands go through the command outbox too: its kind check gains 'live' (SQLite cannot alter a check).
CREATE TABLE command_outbox_new (
  request_id TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('clip', 'arm', 'live')),
  district TEXT NOT NULL,
  topic TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL,
  expires_at DOUBLE PRECISION NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_published_at DOUBLE PRECISION,
  answered_at DOUBLE PRECISION,
  answer_status TEXT
);
INSERT INTO command_outbox_new SELECT * FROM command_outbox;
DROP TABLE command_outbox;
ALTER TABLE command_outbox_new RENAME TO command_outbox;
CREATE INDEX command_outbox_pending ON command_outbox (created_at) WHERE answered_at IS NULL;
