"""Helpers of the tests of the image, latent and job routes: a family's stack behind the http role,
an SSE reader as plain as `curl -N`, and small images."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from genserve.testing import ServerProcess
from tests.conftest import behind_gateway, start_role

API_KEY = "families-key"
KEYS = {"GENSERVE_API_KEYS": f"tester:{API_KEY}"}
# No load-balancer notice on SIGTERM: each module's stack stops at once when its tests are done.
QUICK_STOP = {"GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class FamilyStack:
    backend: ServerProcess
    gateway: ServerProcess
    http: ServerProcess

    def url(self, path: str) -> str:
        return f"{self.http.url}{path}"


@contextmanager
def family_stack(role: str, log_dir: Path, env: Mapping[str, str]) -> Iterator[FamilyStack]:
    """`role` behind a gateway with an API key, and the http role in front of that gateway."""
    with behind_gateway(role, log_dir, {**env, **QUICK_STOP}, {**KEYS, **QUICK_STOP}) as (backend, gateway):
        http = start_role("http", log_dir, {"GENSERVE_HTTP_GATEWAY_ADDR": gateway.address})
        try:
            yield FamilyStack(backend, gateway, http)
        finally:
            http.stop()


@dataclass(frozen=True)
class Sse:
    """One server-sent event: its `id:`, `event:` and the JSON of its `data:`."""

    id: str
    event: str
    data: Any


def sse_events(lines: Iterable[str]) -> Iterator[Sse]:
    """Events from the lines of a text/event-stream body, as they come (a blank line ends one)."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield Sse(fields.get("id", ""), fields.get("event", "message"), json.loads(fields["data"]))
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


def photo_png(width: int = 64, height: int = 48) -> bytes:
    """A colour photo stand-in: smooth gradients with a disc, enough structure to dream on."""
    y, x = np.mgrid[0:height, 0:width]
    disc = ((x - width * 0.45) ** 2 + (y - height * 0.45) ** 2 < (min(width, height) / 4) ** 2).astype(np.float64)
    red, green, blue = x / (width - 1) * 255, y / (height - 1) * 255, disc * 200 + 30
    return png_of(Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8)))


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decoded_png(data: bytes | str) -> Image.Image:
    """A PNG (its bytes, or base64) decoded; fails unless it is a whole PNG."""
    raw = base64.b64decode(data) if isinstance(data, str) else data
    assert raw.startswith(b"\x89PNG"), raw[:16]
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def error_of(response: Any) -> dict[str, Any]:
    """The OpenAI-style error body of a response (and only that)."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])
