"""GET /healthz: ready when the gateway behind answers standard gRPC health with SERVING."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from genserve.client import GenserveClientError
from genserve.http.calls import front_door

router = APIRouter(tags=["health"])
# A probe should hear back within its own timeout, however slow the gateway is.
HEALTH_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", summary="Readiness: 200 when the gateway is SERVING, else 503")
async def healthz(request: Request) -> JSONResponse:
    front = front_door(request)
    gateway = front.settings.gateway_addr
    if front.client is None:
        return JSONResponse({"status": "STARTING", "gateway": gateway}, status_code=503)
    try:
        status = await front.client.health(timeout=HEALTH_TIMEOUT_SECONDS)
    except GenserveClientError as error:
        return JSONResponse({"status": "UNREACHABLE", "gateway": gateway, "message": error.message}, status_code=503)
    return JSONResponse({"status": status, "gateway": gateway}, status_code=200 if status == "SERVING" else 503)
