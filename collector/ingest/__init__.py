"""Ingest: the MQTT subscriber, the acknowledgement ledger, the batching writer and its health."""
