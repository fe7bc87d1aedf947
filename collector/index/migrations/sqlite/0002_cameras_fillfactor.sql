-- PostgreSQL's 0002 sets the cameras table's fillfactor; SQLite has no such setting. The version is kept
-- so that both engines share one numbering.
SELECT 1;
