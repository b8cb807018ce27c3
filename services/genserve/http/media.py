"""Content negotiation for routes that answer with an image: the PNG itself, JSON, or SSE events.

`Accept` is read as RFC 9110 says: each media range with its `q`; the offered type with the
highest q wins (a range names a type exactly, by `type/*` or by `*/*`, the most specific range
giving the q), ties going to the route's own order, whose first is also the answer without an
`Accept` header. Nothing acceptable is 406.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Response
from pydantic import BaseModel

from genserve.client import ImageResult
from genserve.http.errors import ApiError

PNG = "image/png"
JSON = "application/json"
EVENTS = "text/event-stream"
# Headers that carry what a PNG answer cannot hold (the seed to repeat it, its size).
SEED_HEADER = "X-Genserve-Seed"
WIDTH_HEADER = "X-Genserve-Width"
HEIGHT_HEADER = "X-Genserve-Height"
IMAGE_HEADERS = (SEED_HEADER, WIDTH_HEADER, HEIGHT_HEADER)


def _ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        media, *parameters = (piece.strip() for piece in part.split(";"))
        if not media:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((media.lower(), quality))
    return ranges


def _quality(offered: str, ranges: list[tuple[str, float]]) -> float:
    kind = offered.split("/")[0]
    best, specificity = 0.0, -1
    for media, quality in ranges:
        rank = 2 if media == offered else 1 if media == f"{kind}/*" else 0 if media == "*/*" else -1
        if rank > specificity:
            best, specificity = quality, rank
    return best if specificity >= 0 else 0.0


def negotiate(accept: str | None, offered: Sequence[str]) -> str:
    """The offered media type `accept` prefers; `offered[0]` without an Accept header."""
    if not accept or not accept.strip():
        return offered[0]
    ranges = _ranges(accept)
    scored = [(_quality(media, ranges), -position, media) for position, media in enumerate(offered)]
    quality, _, chosen = max(scored)
    if quality <= 0:
        message = f"this route answers with {', '.join(offered)}; the Accept header {accept!r} takes none of them"
        raise ApiError(406, message, param="Accept", code="not_acceptable")
    return chosen


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type=JSON)


def png_response(image: ImageResult, seed: int | None = None) -> Response:
    """The PNG itself; its size (and the seed that made it) in headers."""
    headers = {WIDTH_HEADER: str(image.width), HEIGHT_HEADER: str(image.height)}
    if seed is not None:
        headers[SEED_HEADER] = str(seed)
    return Response(image.png, media_type=PNG, headers=headers)
