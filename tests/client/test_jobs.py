"""Jobs through `genserve.client.Client`: submit, get, list, watch, result, cancel, and a watch
that survives its connection being cut mid-stream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from genserve.client import Client, FailedPrecondition, JobEventKind, JobState
from tests.client.conftest import API_KEY, CuttableProxy, Stack

SMALL = {"iterations": 12, "max_size": 40, "seed": 3}


def test_submit_watch_and_fetch_the_result(client: Client, photo: Image.Image, painting: Image.Image) -> None:
    job = client.submit_style_transfer(photo, painting, preview_every=6, idempotency_key="first", **SMALL)
    # An idle worker may take the job before the gateway reads its record back.
    assert job.state in (JobState.QUEUED, JobState.RUNNING), job.state
    assert job.idempotency_key == "first" and job.created_at is not None
    again = client.submit_style_transfer(photo, painting, preview_every=6, idempotency_key="first", **SMALL)
    assert again.id == job.id

    events = list(client.watch_job(job.id))
    assert events[-1].terminal and events[-1].state == JobState.SUCCEEDED
    assert sum(event.terminal for event in events) == 1
    assert [e.step for e in events if e.kind == JobEventKind.PROGRESS] == list(range(1, 13))
    assert any(event.preview is not None for event in events)
    # Resuming after any event gives exactly the rest.
    middle = events[4].event_id
    assert [e.event_id for e in client.watch_job(job.id, after=middle)] == [e.event_id for e in events[5:]]

    record = client.get_job(job.id)
    assert record.state == JobState.SUCCEEDED and record.step == record.total_steps == 12
    assert record.finished_at is not None and record.losses is not None
    result = client.get_job_result(job.id)
    assert result.id == job.id and max(result.image.width, result.image.height) == 40
    assert result.image.image().size == (result.image.width, result.image.height)
    listed = client.list_jobs(state="succeeded")
    assert job.id in [item.id for item in listed.jobs]


def test_cancel_ends_the_watch_and_the_result_is_refused(
    client: Client, photo: Image.Image, painting: Image.Image
) -> None:
    job = client.submit_style_transfer(photo, painting, iterations=2000, max_size=40)
    cancelled = client.cancel_job(job.id)
    assert cancelled.id == job.id
    events = list(client.watch_job(job.id))
    assert events[-1].state == JobState.CANCELLED and client.get_job(job.id).state == JobState.CANCELLED
    assert client.cancel_job(job.id).state == JobState.CANCELLED  # cancelling again changes nothing
    with pytest.raises(FailedPrecondition):
        client.get_job_result(job.id)


@pytest.fixture
def proxy(stack: Stack) -> Iterator[CuttableProxy]:
    cuttable = CuttableProxy(stack.gateway.address)
    yield cuttable
    cuttable.close()


def test_a_cut_watch_stream_resumes_without_a_missing_or_repeated_event(
    client: Client, proxy: CuttableProxy, photo: Image.Image, painting: Image.Image
) -> None:
    reconnects: list[str] = []
    with Client(proxy.address, api_key=API_KEY, timeout=30) as through_proxy:
        job = through_proxy.submit_style_transfer(photo, painting, iterations=40, max_size=40)
        seen = []
        cuts = 0
        for event in through_proxy.watch_job(job.id, on_reconnect=lambda reason, *_: reconnects.append(reason)):
            seen.append(event.event_id)
            if len(seen) in (2, 6):  # twice, the second time after a resume
                cuts += proxy.cut()
    assert cuts >= 2 and len(reconnects) >= 2, reconnects
    assert all("stream lost" in reason for reason in reconnects)
    # Every event of the job, as a fresh watch straight to the gateway reads them.
    history = [event.event_id for event in client.watch_job(job.id)]
    assert seen == history and len(set(seen)) == len(seen)
    assert client.get_job(job.id).state == JobState.SUCCEEDED
