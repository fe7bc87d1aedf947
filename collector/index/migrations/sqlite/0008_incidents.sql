-- Incidents opened by agencies, the positions of each (a moving subject adds sightings), and the clip requests
-- made under each. Times are epoch seconds. The clip's progress is in `clips` (filled from ClipUpdates).
CREATE TABLE incidents (
  incident_id TEXT PRIMARY KEY,
  agency TEXT NOT NULL,
  incident_no TEXT NOT NULL,  -- the agency's own number: one incident per number and agency
  service TEXT NOT NULL,
  kind TEXT NOT NULL,
  purpose TEXT NOT NULL,
  district TEXT,
  radius_m DOUBLE PRECISION NOT NULL,
  occurred_at DOUBLE PRECISION NOT NULL,
  opened_at DOUBLE PRECISION NOT NULL,
  opened_by TEXT NOT NULL,
  expires_at DOUBLE PRECISION NOT NULL,
  closed_at DOUBLE PRECISION,
  closed_by TEXT,
  UNIQUE (agency, incident_no)
);
CREATE INDEX incidents_agency_opened ON incidents (agency, opened_at);

CREATE TABLE incident_positions (
  incident_id TEXT NOT NULL REFERENCES incidents (incident_id),
  seq INTEGER NOT NULL,
  lat DOUBLE PRECISION NOT NULL,
  lon DOUBLE PRECISION NOT NULL,
  at DOUBLE PRECISION NOT NULL,
  district TEXT NOT NULL,
  added_by TEXT NOT NULL,
  PRIMARY KEY (incident_id, seq)
);

CREATE TABLE clip_requests (
  request_id TEXT PRIMARY KEY,
  incident_id TEXT NOT NULL REFERENCES incidents (incident_id),
  camera_id TEXT NOT NULL,
  district TEXT NOT NULL,
  agency TEXT NOT NULL,
  requested_by TEXT NOT NULL,
  service TEXT NOT NULL,
  priority TEXT NOT NULL,
  start_at DOUBLE PRECISION NOT NULL,
  end_at DOUBLE PRECISION NOT NULL,
  requested_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX clip_requests_incident ON clip_requests (incident_id, requested_at);
CREATE INDEX clip_requests_camera ON clip_requests (camera_id, requested_at);
CREATE INDEX clip_requests_agency ON clip_requests (agency, requested_at);

-- Where the agent took a clip's footage from (ClipUpdate.source: live, preroll, recording).
ALTER TABLE clips ADD COLUMN footage TEXT;
