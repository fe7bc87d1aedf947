-- Agent presence is ordered by the agent's connection session (AgentState.session), not by time: a last will
-- carries the time its connection began and lost against the `online` sent after it. Rows from before this
-- version have session 0, so the first presence with a session replaces them.
ALTER TABLE agents ADD COLUMN session BIGINT NOT NULL DEFAULT 0;

-- One row per presence the index accepted, timed by the collector when it took it in: while a district's
-- agent is offline its cameras' state is unknown (API, gauges and availability read this with the cameras).
CREATE TABLE agent_history (
  district TEXT NOT NULL,
  state TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (district, at)
) WITHOUT ROWID;
