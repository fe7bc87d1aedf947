"""The operator's web console: static files served at `/` beside the `/v1` API (docs/console.md)."""
