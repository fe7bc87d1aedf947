-- Commands to agents waiting to be delivered (collector/commands/outbox.py). A row is written in the same
-- transaction as the request it carries; the publisher sends `payload` (the signed JSON) to `topic` at QoS 1
-- until the agent answers (`answered_at`, `answer_status`: the first ClipUpdate's status, `published` for an
-- arm command once the broker took it, `expired` when `expires_at` passed unanswered).
CREATE TABLE command_outbox (
  request_id TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('clip', 'arm')),
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
-- What the publisher scans: only the unanswered rows.
CREATE INDEX command_outbox_pending ON command_outbox (created_at) WHERE answered_at IS NULL;
