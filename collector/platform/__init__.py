"""The public HTTP API under /v1 (FastAPI): routers by resource, schemas, errors with stable codes."""
