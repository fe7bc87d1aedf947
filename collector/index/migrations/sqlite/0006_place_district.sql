-- The district a camera stands in according to Seoul's district boundaries (collector/index/geo.py), written
-- with each CameraMeta that carries a position; NULL without a position or outside Seoul. It may differ from
-- `district` (the agent that reports the camera) for a camera just across a border. Rows indexed before this
-- migration get it with the next CameraMeta (agents publish theirs retained, so at the next connection).
ALTER TABLE cameras ADD COLUMN place_district TEXT;
