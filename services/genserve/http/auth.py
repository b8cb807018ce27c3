"""The caller's API key, taken from the HTTP request and passed through to the gateway unchanged.

The front door checks no key itself: the gateway does (the same keys, the same answers), so a
request without a key reaches the gateway without one and gets its 401 when keys are configured.
"""

from __future__ import annotations

from starlette.requests import Request

from genserve.http.errors import ApiError


def api_key_of(request: Request) -> str:
    """`Authorization: Bearer KEY` (what the openai package sends), else `X-Api-Key: KEY`; "" = none."""
    authorization = request.headers.get("authorization", "").strip()
    if authorization:
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            message = "the Authorization header must be 'Bearer <API key>'"
            raise ApiError(401, message, param="Authorization", code="invalid_api_key")
        return key.strip()
    return request.headers.get("x-api-key", "").strip()
