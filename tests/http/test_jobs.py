"""Style-transfer jobs over HTTP against a real job system (Redis, a worker, a gateway with API
keys): submit as JSON or multipart, get, list, cancel, the result PNG, and the events as SSE
resumed with Last-Event-ID without a missing or repeated event."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from genserve.testing import JobStack, ServerProcess
from tests.conftest import MODEL_STORE, start_role
from tests.http.families import API_KEY, AUTH, Sse, b64, decoded_png, error_of, photo_png, sse_events
from tests.jobs.conftest import WORKER_ENV

SMALL = {"iterations": 12, "max_size": 40, "seed": 3, "preview_every": 6}


@pytest.fixture(scope="module")
def http_role(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("http-jobs")
    with JobStack(MODEL_STORE, {"tester": API_KEY}, worker_env=WORKER_ENV, work_dir=work) as jobs:
        assert jobs.gateway is not None
        jobs.start_worker()
        http = start_role("http", jobs.log_dir, {"GENSERVE_HTTP_GATEWAY_ADDR": jobs.gateway.address})
        try:
            yield http
        finally:
            http.stop()


@pytest.fixture(scope="module")
def http(http_role: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_role.url, headers=AUTH, timeout=60) as client:
        yield client


def style_body(**options: object) -> dict[str, object]:
    return {"content": b64(photo_png()), "styles": [b64(photo_png(24, 24))], **SMALL, **options}


def read_events(http: httpx.Client, job_id: str, last_event_id: str = "", limit: int | None = None) -> list[Sse]:
    """The job's events from the SSE stream; with `limit`, the stream is cut after that many."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    received: list[Sse] = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())  # kept: leaving a loop over it would close the connection
        for item in events:
            received.append(item)
            if limit is not None and len(received) == limit:
                break
    return received


def test_a_job_is_submitted_watched_resumed_and_its_result_fetched(http: httpx.Client) -> None:
    submitted = http.post("/v1/jobs", json=style_body(iterations=30, idempotency_key="http-first"))
    assert submitted.status_code == 200, submitted.text
    job = submitted.json()
    assert job["state"] in ("queued", "running") and job["idempotency_key"] == "http-first"
    assert http.post("/v1/jobs", json=style_body(iterations=30, idempotency_key="http-first")).json()["id"] == job["id"]

    # Cut the stream mid-way, then resume after the last event received.
    head = read_events(http, job["id"], limit=5)
    assert all(item.id for item in head) and not head[-1].data["terminal"]
    tail = read_events(http, job["id"], last_event_id=head[-1].id)
    whole = read_events(http, job["id"])
    assert [item.id for item in head + tail] == [item.id for item in whole], "every event once, in order"
    assert len({item.id for item in whole}) == len(whole)
    assert [item.data for item in head + tail] == [item.data for item in whole]
    assert [item.data["step"] for item in whole if item.event == "progress"] == list(range(1, 31))
    assert whole[-1].event == "state" and whole[-1].data["state"] == "succeeded" and whole[-1].data["terminal"]
    assert all(item.id == item.data["event_id"] and item.data["job_id"] == job["id"] for item in whole)
    assert any(item.data["preview"] is not None for item in whole)
    # After the terminal event there is nothing more: 204 tells EventSource to stop reconnecting.
    after_end = http.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": whole[-1].id})
    assert after_end.status_code == 204
    resumed_by_query = http.get(f"/v1/jobs/{job['id']}/events", params={"after": whole[-2].id})
    assert [item.id for item in sse_events(resumed_by_query.text.splitlines())] == [whole[-1].id]

    record = http.get(f"/v1/jobs/{job['id']}").json()
    assert record["state"] == "succeeded" and record["step"] == record["total_steps"] == 30
    assert record["finished_at"] and record["losses"]["total"] > 0
    result = http.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert max(decoded_png(result.content).size) == 40
    as_json = http.get(f"/v1/jobs/{job['id']}/result", headers={"Accept": "application/json"}).json()
    assert as_json["id"] == job["id"] and decoded_png(as_json["image"]["png"]).tobytes() == (
        decoded_png(result.content).tobytes()
    )
    listed = http.get("/v1/jobs", params={"state": "succeeded"}).json()
    assert job["id"] in [item["id"] for item in listed["jobs"]]


def test_a_multipart_job_can_be_cancelled_and_has_no_result(http: httpx.Client) -> None:
    files = [("content", ("c.png", photo_png())), ("style", ("s.png", photo_png(24, 24)))]
    submitted = http.post("/v1/jobs", files=files, data={"iterations": "2000", "max_size": "40"})
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["id"]
    cancelled = http.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["id"] == job_id
    events = read_events(http, job_id)
    assert events[-1].data["state"] == "cancelled" and events[-1].data["terminal"]
    assert http.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"
    assert http.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "cancelled"
    refused = http.get(f"/v1/jobs/{job_id}/result")
    assert refused.status_code == 409 and error_of(refused)["code"] == "failed_precondition"
    page = http.get("/v1/jobs", params={"page_size": 1}).json()
    assert len(page["jobs"]) == 1 and page["next_page_token"]


def test_unknown_jobs_and_bad_requests_are_refused_by_name(http: httpx.Client) -> None:
    for method, path in (
        ("GET", "/v1/jobs/no-such-job"),
        ("POST", "/v1/jobs/no-such-job/cancel"),
        ("GET", "/v1/jobs/no-such-job/result"),
        ("GET", "/v1/jobs/no-such-job/events"),
    ):
        response = http.request(method, path)
        error = error_of(response)
        assert response.status_code == 404 and (error["param"], error["code"]) == ("id", "job_not_found"), path
    too_many = http.post("/v1/jobs", json=style_body(iterations=10**6))
    assert too_many.status_code == 400 and error_of(too_many)["param"] == "iterations"
    long_key = http.post("/v1/jobs", json=style_body(idempotency_key="k" * 200))
    assert long_key.status_code == 400 and error_of(long_key)["param"] == "idempotency_key"
    bad_state = http.get("/v1/jobs", params={"state": "sleeping"})
    assert bad_state.status_code == 400 and error_of(bad_state)["param"] == "state"
