"""JSON errors in the Calls API's shape: {"errorCode", "errorDescription"} (CALLS_API.md 1.5)."""
from __future__ import annotations

from aiohttp import web

from ..logs import get_logger

log = get_logger("api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, description: str, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.headers = headers or {}


def json_error(status: int, code: str, description: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errorCode": code, "errorDescription": description}, status=status, headers=headers)


# aiohttp's own HTTP errors mapped to the contract's codes.
_HTTP_CODES = {
    400: "decoding_error",
    401: "unauthorized",
    404: "not_found",
    405: "invalid_params",
    413: "payload_too_large",
}


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return json_error(e.status, e.code, e.description, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "internal_error")
        if e.status == 404:
            description = f"no such endpoint: {request.method} {request.path}"
        elif e.status == 405:
            description = f"{request.method} is not allowed on {request.path}"
        else:
            description = e.text or e.reason
        response = json_error(e.status, code, description)
        if "Allow" in e.headers:
            response.headers["Allow"] = e.headers["Allow"]
        return response
    except Exception:
        log.exception("request failed", method=request.method, path=request.path)
        return json_error(500, "internal_error", "Backend error")
