"""Every error the API answers, as `{"error": {"code", "message", "field"?}}` with a stable code.

Handlers raise `ApiError`; FastAPI's own errors (validation, unknown route, wrong method) and anything
unexpected are converted here, in one place, so a client never sees another shape. The codes are listed in
docs/api.md; changing one is a breaking change of the API.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from collector.index.store import StoreError

log = logging.getLogger(__name__)

# Starlette's status errors (no route, wrong method, ...) -> our code.
_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorBody


class ApiError(Exception):
    """An answer other than success: HTTP status, stable code, a message for people, the field at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"{what}_not_found", f"no {what} {ident!r}", None)


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """`("body", "window", "start")` -> `window.start`; `("query", "limit")` -> `limit`."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    # A body that is not JSON at all is located at a character offset: the body is at fault, not a field.
    field = "body" if first.get("type") == "json_invalid" else field_path(first.get("loc", ()))
    message = f"{field}: {first.get('msg', 'invalid value')}"
    return error_response(422, "invalid_request", message, field)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "bad_request")
    return error_response(exc.status_code, code, str(exc.detail), None, dict(exc.headers or {}))


async def _store_error(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("store error: %s", exc)
    return error_response(503, "store_unavailable", "the index is unavailable; retry later")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; the request was not completed")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(Exception, _unexpected)


# Responses every route may give, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (401, "no, expired or otherwise invalid bearer token"),
        (403, "the token's account may not do this (audited)"),
        (422, "a malformed request; `field` names the part at fault"),
        (429, "too many requests; see Retry-After"),
    )
}
