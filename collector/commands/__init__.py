"""Commands to district agents: signed, recorded, and published from a durable outbox until answered."""
