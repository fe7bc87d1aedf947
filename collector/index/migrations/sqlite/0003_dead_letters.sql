-- Messages the index refused (a value the database cannot hold), kept as received with the reason; the writer
-- keeps only the newest `ingest.dead_letters_keep` rows.
CREATE TABLE dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  reason TEXT NOT NULL,
  error TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL
);
