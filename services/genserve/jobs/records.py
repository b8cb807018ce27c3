"""What a job and its events look like in Redis, read into typed records; shared by the gateway and workers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genserve.common.redis_clients import text_of

PREFIX = "genserve:"
QUEUE = PREFIX + "jobs:queue"
ACTIVE = PREFIX + "jobs:active"
RUNNING = PREFIX + "jobs:running"
STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def owner_jobs_key(owner: str) -> str:
    return f"{PREFIX}owner:{owner}:jobs"


def new_job_id() -> str:
    """Sorts by creation time (milliseconds, hex), then 40 random bits: unique without coordination."""
    return f"{int(time.time() * 1000):012x}{os.urandom(5).hex()}"


def _int(value: bytes | str | None) -> int:
    text = text_of(value)
    return int(text) if text else 0


def losses_json(content: float, style: float, tv: float, total: float) -> str:
    return json.dumps([content, style, tv, total])


def _losses(value: bytes | str | None) -> tuple[float, float, float, float] | None:
    text = text_of(value)
    if not text:
        return None
    content, style, tv, total = json.loads(text)
    return float(content), float(style), float(tv), float(total)


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner: str
    state: str
    step: int
    total_steps: int
    losses: tuple[float, float, float, float] | None
    created_ms: int
    started_ms: int  # 0 = not started
    finished_ms: int  # 0 = not finished
    expires_ms: int  # 0 = not finished (a running job does not expire)
    attempt: int
    error: str
    idempotency_key: str
    params: str  # StyleParams as JSON
    preview_every: int
    checkpoint_step: int

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_hash(cls, fields: Mapping[Any, Any]) -> JobRecord:
        def get(name: str) -> bytes | None:
            return fields.get(name.encode())

        return cls(
            id=text_of(get("id")),
            owner=text_of(get("owner")),
            state=text_of(get("state")),
            step=_int(get("step")),
            total_steps=_int(get("total_steps")),
            losses=_losses(get("losses")),
            created_ms=_int(get("created_ms")),
            started_ms=_int(get("started_ms")),
            finished_ms=_int(get("finished_ms")),
            expires_ms=_int(get("expires_ms")),
            attempt=_int(get("attempt")),
            error=text_of(get("error")),
            idempotency_key=text_of(get("idem")),
            params=text_of(get("params")),
            preview_every=_int(get("preview_every")),
            checkpoint_step=_int(get("checkpoint_step")),
        )


@dataclass(frozen=True)
class JobEventRecord:
    event_id: str
    kind: str  # "state" | "progress" | "resumed"
    state: str
    step: int
    total_steps: int
    losses: tuple[float, float, float, float] | None
    attempt: int
    time_ms: int
    error: str
    preview: bytes | None

    @property
    def terminal(self) -> bool:
        return self.kind == "state" and self.state in TERMINAL

    @classmethod
    def from_entry(cls, entry_id: Any, fields: Mapping[Any, Any]) -> JobEventRecord:
        def get(name: str) -> bytes | None:
            return fields.get(name.encode())

        return cls(
            event_id=text_of(entry_id),
            kind=text_of(get("kind")),
            state=text_of(get("state")),
            step=_int(get("step")),
            total_steps=_int(get("total")),
            losses=_losses(get("losses")),
            attempt=_int(get("attempt")),
            time_ms=_int(get("time")),
            error=text_of(get("error")),
            preview=get("preview"),
        )
