-- The index, version 1 (SQLite). Times are epoch seconds; reasons are comma-joined slugs.
CREATE TABLE agents (
  district TEXT PRIMARY KEY,
  agent_id TEXT NOT NULL,
  state TEXT NOT NULL,
  version TEXT NOT NULL DEFAULT '',
  cameras INTEGER NOT NULL DEFAULT 0,
  sent_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE cameras (
  camera_id TEXT PRIMARY KEY,
  district TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  name TEXT, address_text TEXT, lat DOUBLE PRECISION, lon DOUBLE PRECISION,
  manufacturer TEXT, model TEXT, firmware TEXT, serial TEXT, identity TEXT, identity_kind TEXT,
  meta_updated_at DOUBLE PRECISION,
  state TEXT,
  reasons TEXT NOT NULL DEFAULT '',
  last_error TEXT,
  since DOUBLE PRECISION,
  checked_at DOUBLE PRECISION,
  last_seen DOUBLE PRECISION
);
CREATE INDEX cameras_district_state ON cameras (district, state);

-- One row per transition (state or reasons changed): availability over any window comes from it.
CREATE TABLE status_history (
  camera_id TEXT NOT NULL,
  district TEXT NOT NULL,
  state TEXT NOT NULL,
  reasons TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (camera_id, at)
) WITHOUT ROWID;
CREATE INDEX status_history_district_at ON status_history (district, at);

-- Cameras by state in each health snapshot, for dashboards.
CREATE TABLE health_counts (
  district TEXT NOT NULL,
  taken_at DOUBLE PRECISION NOT NULL,
  state TEXT NOT NULL,
  cameras INTEGER NOT NULL,
  PRIMARY KEY (district, taken_at, state)
) WITHOUT ROWID;

CREATE TABLE clips (
  request_id TEXT PRIMARY KEY,
  camera_id TEXT NOT NULL,
  district TEXT NOT NULL,
  agent_id TEXT,
  status TEXT NOT NULL,
  status_rank INTEGER NOT NULL,
  reason TEXT, object_key TEXT, thumbnail_key TEXT, manifest_key TEXT,
  size_bytes BIGINT, sha256 TEXT,
  covered_start DOUBLE PRECISION, covered_end DOUBLE PRECISION,
  agency TEXT, incident TEXT,
  updated_at DOUBLE PRECISION NOT NULL,
  missing_object BOOLEAN NOT NULL DEFAULT FALSE,
  source TEXT NOT NULL DEFAULT 'mqtt'
);
CREATE INDEX clips_camera ON clips (camera_id);
