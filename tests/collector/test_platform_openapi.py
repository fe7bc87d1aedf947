"""The checked-in OpenAPI document is the one the code generates (regenerate it with
`python -m collector.platform.openapi > docs/api/openapi.json`), and it is OpenAPI 3.1 under /v1."""

from __future__ import annotations

import json
from pathlib import Path

from collector.platform.openapi import render

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "api" / "openapi.json"


def test_docs_api_openapi_json_is_current() -> None:
    assert CHECKED_IN.read_text(encoding="utf-8") == render(), (
        "docs/api/openapi.json is stale: run `python -m collector.platform.openapi > docs/api/openapi.json`"
    )


def test_every_path_is_versioned_and_documents_the_error_shape() -> None:
    doc = json.loads(render())
    assert doc["openapi"].startswith("3.1")
    assert doc["paths"] and all(p.startswith("/v1/") for p in doc["paths"])
    assert "ErrorResponse" in doc["components"]["schemas"]
    # FastAPI's own 422 shape is replaced by ours everywhere.
    assert "HTTPValidationError" not in doc["components"]["schemas"]
