"""The gateway's side of the job system: submit, read, watch, cancel and list jobs in Redis (asyncio).

Every record is read back through its owner: a job id that exists but belongs to another API key
is reported exactly like one that does not exist. A Redis that cannot be reached makes every
public call fail with UNAVAILABLE naming it (`_store_call`), never with Redis's own exception.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from genserve.common.config import JobSettings
from genserve.common.errors import FailedPrecondition, NotFound, ResourceExhausted, Unavailable
from genserve.common.redis_clients import redacted, text_of
from genserve.jobs import scripts
from genserve.jobs.records import (
    ACTIVE,
    PREFIX,
    RUNNING,
    JobEventRecord,
    JobRecord,
    job_key,
    new_job_id,
    owner_jobs_key,
)

WATCH_BLOCK_MS = 5000  # one XREAD wait; the loop re-checks the record between waits
EVENT_BATCH = 200


@dataclass(frozen=True)
class NewJob:
    owner: str
    idempotency_key: str
    params_json: str
    total_steps: int
    seed: int
    preview_every: int
    content: bytes
    styles: Sequence[tuple[bytes, float]]


def _missing(job_id: str) -> NotFound:
    return NotFound(f"job {job_id!r} not found (it may have expired, or belong to another API key)")


P = ParamSpec("P")
R = TypeVar("R")


def _store_call(
    method: Callable[Concatenate[JobQueue, P], Awaitable[R]],
) -> Callable[Concatenate[JobQueue, P], Awaitable[R]]:
    """A JobQueue call whose Redis failure becomes UNAVAILABLE with the store named."""

    @functools.wraps(method)
    async def call(self: JobQueue, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except RedisError as error:
            raise self.unavailable(error) from None

    return call


class JobQueue:
    def __init__(self, client: aioredis.Redis, settings: JobSettings, redis_url: str) -> None:
        self.client = client
        self.settings = settings
        self.redis_url = redis_url
        self._submit = client.register_script(scripts.SUBMIT)
        self._cancel = client.register_script(scripts.CANCEL)
        self._ensure_group = client.register_script(scripts.ENSURE_GROUP)

    def unavailable(self, error: RedisError) -> Unavailable:
        return Unavailable(
            f"the job store (Redis at {redacted(self.redis_url)}) is unavailable: {error}; retry shortly"
        )

    async def ensure_group(self) -> None:
        """The queue stream and the workers' consumer group, made if missing."""
        await self._ensure_group(args=[PREFIX])

    @_store_call
    async def submit(self, job: NewJob) -> tuple[JobRecord, bool]:
        """(the job, whether it was created now) — False for an idempotent repeat."""
        job_id = new_job_id()
        weights = json.dumps([weight for _, weight in job.styles])
        outcome = await self._submit(
            args=[
                PREFIX, job_id, job.owner, job.idempotency_key,
                self.settings.max_active, self.settings.max_active_per_key,
                job.total_steps, job.params_json, str(job.seed), job.preview_every,
                job.content, len(job.styles), weights, *(image for image, _ in job.styles),
            ]
        )  # fmt: skip
        status, detail = (part.decode() for part in outcome)
        if status == "full":
            if detail == "global":
                raise ResourceExhausted(
                    f"the job queue is full: {self.settings.max_active} jobs queued or running is the limit "
                    "(GENSERVE_JOB_MAX_ACTIVE); retry later"
                )
            raise ResourceExhausted(
                f"this API key has {self.settings.max_active_per_key} jobs queued or running, its limit "
                "(GENSERVE_JOB_MAX_ACTIVE_PER_KEY); wait for some to finish or cancel them"
            )
        return await self.get(detail, job.owner), status == "created"

    @_store_call
    async def get(self, job_id: str, owner: str) -> JobRecord:
        fields = await self.client.hgetall(job_key(job_id)) if job_id else {}
        record = JobRecord.from_hash(fields) if fields else None
        if record is None or record.owner != owner:
            raise _missing(job_id)
        return record

    @_store_call
    async def cancel(self, job_id: str, owner: str) -> JobRecord:
        await self.get(job_id, owner)
        await self._cancel(args=[PREFIX, job_id, owner, int(self.settings.ttl_seconds * 1000)])
        return await self.get(job_id, owner)

    @_store_call
    async def result(self, job_id: str, owner: str) -> tuple[JobRecord, bytes]:
        record = await self.get(job_id, owner)
        if record.state != "SUCCEEDED":
            raise FailedPrecondition(f"job {job_id} is {record.state}, not SUCCEEDED: it has no result")
        data: Any = await self.client.get(job_key(job_id) + ":result")
        if data is None:
            raise _missing(job_id)
        return record, data

    async def events(self, job_id: str, owner: str, after: str) -> AsyncIterator[JobEventRecord]:
        """Events after `after` (all when empty), then live ones, until the terminal event."""
        try:
            async for event in self._events(job_id, owner, after):
                yield event
        except RedisError as error:
            raise self.unavailable(error) from None

    async def _events(self, job_id: str, owner: str, after: str) -> AsyncIterator[JobEventRecord]:
        await self.get(job_id, owner)
        stream = job_key(job_id) + ":events"
        cursor = after or "0-0"
        while True:
            # History first (XRANGE with an exclusive start), then block for new entries.
            batch: Any = await self.client.xrange(stream, min=f"({cursor}", max="+", count=EVENT_BATCH)
            if not batch:
                record = await self.get(job_id, owner)  # expired or gone: NOT_FOUND ends the watch
                if record.terminal:
                    # Its terminal event is the stream's last: read once more in case it landed just now.
                    batch = await self.client.xrange(stream, min=f"({cursor}", max="+", count=EVENT_BATCH)
                    if not batch:
                        return
                else:
                    found: Any = await self.client.xread({stream: cursor}, count=EVENT_BATCH, block=WATCH_BLOCK_MS)
                    batch = found[0][1] if found else []
            for entry_id, fields in batch:
                event = JobEventRecord.from_entry(entry_id, fields)
                cursor = event.event_id
                yield event
                if event.terminal:
                    return

    @_store_call
    async def list(self, owner: str, state: str, page_size: int, page_token: str) -> tuple[list[JobRecord], str]:
        """The owner's jobs, newest first; ids sort by creation time, so the token is the last id returned."""
        jobs: list[JobRecord] = []
        key = owner_jobs_key(owner)
        upper = f"({page_token}" if page_token else "+"
        while len(jobs) < page_size:
            ids = await self.client.zrevrangebylex(key, upper, "-", start=0, num=max(page_size * 2, 20))
            if not ids:
                return jobs, ""
            for raw in ids:
                job_id = text_of(raw)
                upper = f"({job_id}"
                fields = await self.client.hgetall(job_key(job_id))
                if not fields:
                    await self.client.zrem(key, job_id)  # its record expired
                    continue
                record = JobRecord.from_hash(fields)
                if not state or record.state == state:
                    jobs.append(record)
                    if len(jobs) == page_size:
                        break
        more = await self.client.zrevrangebylex(key, upper, "-", start=0, num=1)
        return jobs, (jobs[-1].id if more else "")

    async def counts(self) -> tuple[int, int]:
        """(queued, running) over the whole system."""
        active, running = await self.client.scard(ACTIVE), await self.client.scard(RUNNING)  # type: ignore[misc]
        return max(0, int(active) - int(running)), int(running)
