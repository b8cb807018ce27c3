"""GET /: the web playground, one static page (HTML, CSS and plain JavaScript in ../static) that
calls only the public HTTP API. Its CSS and script are served from /static by `static_files`.

The page loads nothing from elsewhere, and its Content-Security-Policy says so: scripts, styles
and connections to this origin only; images also from data: and blob: URLs (the API's images
arrive as base64 PNG, a job's result as a blob).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"
STATIC_PATH = "/static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(tags=["playground"])


@router.get(
    "/",
    response_class=FileResponse,
    summary="The web playground: a page that tries every family through this API",
    responses={200: {"content": {"text/html": {}}, "description": "The playground's HTML page"}},
)
async def playground() -> FileResponse:
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


def static_files() -> StaticFiles:
    """The page's CSS and script (and nothing else lies in that folder)."""
    return StaticFiles(directory=STATIC, check_dir=True)
