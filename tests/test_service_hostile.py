"""Hostile input against the app, in process: what a client can send must never cost a 500, unbounded metrics,
unbounded memory or a connection held forever.

The app is started once (its lifespan in a TestClient) and driven either through the TestClient or through
httpx's ASGI transport, which streams request bodies piece by piece, so stalled and concurrent uploads can
be staged without sockets (the real-socket checks are in ``test_service_connections.py``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import string
import threading
import time
import warnings
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from optimizer.errors import ConfigError  # noqa: E402
from optimizer.evaluator import get_profile  # noqa: E402
from optimizer.service import ServiceConfig, create_app  # noqa: E402
from optimizer.service import jobs as jobs_module  # noqa: E402
from optimizer.service.admission import (  # noqa: E402
    PAIR_BYTES_PER_PIXEL,
    MemoryBudget,
    Ticket,
    header_pixels,
    work_bytes,
)
from optimizer.service.errors import ServiceError  # noqa: E402
from optimizer.service.routes import evaluate as evaluate_routes  # noqa: E402

KIB = 1024
MIB = 1024 * KIB
BOUNDARY = "hostile-test-boundary"


def _png(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pair(kodak_paths: list[Path]) -> tuple[bytes, bytes]:
    crop = PILImage.open(kodak_paths[0]).convert("RGB").crop((300, 200, 460, 320))
    buffer = io.BytesIO()
    crop.save(buffer, "JPEG", quality=60)
    return _png(crop), buffer.getvalue()


@pytest.fixture(scope="module")
def one_bit_pair() -> tuple[bytes, bytes]:
    """Two 2000x2000 one-bit PNGs: a few KB that decode to 4 MP each (the issue's 4000x4000 scaled down)."""
    image = PILImage.new("1", (2000, 2000), 0)
    image.paste(1, (0, 0, 1000, 2000))
    return _png(image), _png(image.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT))


def _files(original: bytes, processed: bytes) -> dict[str, tuple[str, bytes]]:
    return {"original": ("a.png", original), "processed": ("b.png", processed)}


def _multipart_head(name: str, filename: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def _error(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["type"] == kind, body
    return dict(body["error"])


@pytest.fixture()
def started() -> Iterator[Any]:
    """A factory of started apps (TestClient lifespan), closed at the end of the test."""
    clients: list[Any] = []

    def start(**settings: Any) -> tuple[Any, Any]:
        values = {"profiles": ("fast",), "pool_size": 1, "warm_up": False, **settings}
        app = create_app(ServiceConfig(**values))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return app, client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def _asgi(app: Any) -> Any:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30)


# --------------------------------------------------------------------------------------------------
# Malformed requests


def test_overlong_boundary_is_a_bad_request(started: Any) -> None:
    """python-multipart refuses boundaries over 256 characters in its constructor; that was a 500."""
    _, client = started()
    boundary = "x" * 300
    response = client.post(
        "/evaluate/single",
        content=f"--{boundary}\r\n".encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "Boundary length" in _error(response, 400, "bad_request")["message"]


def test_random_methods_do_not_grow_the_metrics(started: Any) -> None:
    app, client = started()
    rng = random.Random(7)
    for _ in range(60):
        method = "".join(rng.choice(string.ascii_uppercase) for _ in range(8))
        client.request(method, "/health")
        client.request(method, f"/no/such/{rng.random()}")
    text = client.get("/metrics").text
    series = [line for line in text.splitlines() if line.startswith("optimizer_http_requests_total{")]
    methods = {line.split('method="')[1].split('"')[0] for line in series}
    assert methods <= {"GET", "other"}, methods
    endpoints = {line.split('endpoint="')[1].split('"')[0] for line in series}
    assert endpoints <= {"/health", "unmatched", "/metrics"}, endpoints
    assert len(series) <= 6


def test_client_going_away_is_not_an_internal_error(started: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, _ = started()
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": _multipart_head("original", "a.png") + b"\x89PNG", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/evaluate/single",
        "raw_path": b"/evaluate/single",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    with caplog.at_level(logging.ERROR, logger="optimizer.service"):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    assert app.state.service.uploads.used == 0


# --------------------------------------------------------------------------------------------------
# Stalled bodies and uploads in flight


async def _stalled_body(
    first: bytes, started: asyncio.Event, release: asyncio.Event, rest: bytes
) -> AsyncIterator[bytes]:
    yield first
    started.set()
    await release.wait()
    yield rest


def test_stalled_body_gets_408_and_releases_its_bytes(started: Any, pair: tuple[bytes, bytes]) -> None:
    app, _ = started(body_timeout=0.3)

    async def go() -> Any:
        began, release = asyncio.Event(), asyncio.Event()
        body = _stalled_body(_multipart_head("original", "a.png") + pair[0][:1000], began, release, b"")
        async with _asgi(app) as client:
            started_at = time.monotonic()
            response = await client.post(
                "/evaluate/single", content=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
            )
            return response, time.monotonic() - started_at

    response, elapsed = asyncio.run(go())
    error = _error(response, 408, "body_timeout")
    assert error["timeout"] == 0.3 and response.headers["connection"] == "close"
    assert elapsed < 5
    assert app.state.service.uploads.used == 0


def test_uploads_in_flight_are_bounded(started: Any, pair: tuple[bytes, bytes]) -> None:
    """Bodies held by all requests are admitted like work: past the budget, 503 while the body streams."""
    app, _ = started(max_file_bytes=1 * MIB, max_request_bytes=2 * MIB, max_buffered_bytes=2 * MIB, body_timeout=5)
    state = app.state.service
    filler = b"\0" * (700 * KIB)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    async def go() -> tuple[Any, Any, int]:
        began, release = asyncio.Event(), asyncio.Event()
        first = _multipart_head("original", "a.png") + filler + b"\r\n" + _multipart_head("processed", "b.png")
        rest = filler + f"\r\n--{BOUNDARY}--\r\n".encode()
        async with _asgi(app) as client:
            stalled = asyncio.create_task(
                client.post("/evaluate/single", content=_stalled_body(first, began, release, rest), headers=headers)
            )
            await began.wait()
            held_by_first = state.uploads.used
            second = await client.post(
                "/evaluate/single", files=_files(pair[0] + b"\0" * (900 * KIB), pair[1] + b"\0" * (900 * KIB))
            )
            release.set()
            return await stalled, second, held_by_first

    first, second, held_by_first = asyncio.run(go())
    assert held_by_first >= 700 * KIB
    error = _error(second, 503, "overloaded")
    assert error["reason"] == "uploads" and int(second.headers["Retry-After"]) >= 1
    _error(first, 422, "invalid_image")  # the stalled one went on and was read to its end
    assert state.uploads.used == 0 and state.memory.used == 0
    assert 'optimizer_pool_rejected_total{reason="uploads"} 1.0' in state.telemetry.render()[0].decode()


# --------------------------------------------------------------------------------------------------
# Memory admission from image headers


def test_header_pixels_without_decoding(one_bit_pair: tuple[bytes, bytes]) -> None:
    assert len(one_bit_pair[0]) < 8 * KIB
    assert header_pixels(one_bit_pair[0]) == 4_000_000
    assert header_pixels(b"not an image") is None
    assert work_bytes(get_profile("fast"), 1000) == PAIR_BYTES_PER_PIXEL["fast"] * 1000
    custom = get_profile("default")
    assert work_bytes(custom, 1000, compress=True) > work_bytes(custom, 1000)


def test_small_request_of_huge_images_is_refused_before_decoding(
    started: Any, one_bit_pair: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two 4 MP one-bit PNGs in a few KB: refused from their headers (413), never decoded."""
    decoded: list[str] = []
    monkeypatch.setattr(jobs_module, "load_image", lambda *a, **k: decoded.append("x"))
    app, client = started(memory_budget=500_000_000, max_pixels=10_000_000)
    started_at = time.monotonic()
    response = client.post("/evaluate/single", files=_files(*one_bit_pair))
    error = _error(response, 413, "too_much_memory")
    assert error["limit"] == 500_000_000 and error["needed"] == 4_000_000 * PAIR_BYTES_PER_PIXEL["fast"]
    assert decoded == [] and time.monotonic() - started_at < 5
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("original/a.png", one_bit_pair[0])
        archive.writestr("processed/a.png", one_bit_pair[1])
    _error(client.post("/evaluate/batch", files={"archive": ("x.zip", zipped.getvalue())}), 413, "too_much_memory")
    compress = client.post("/compress?target=ssim:0.9&formats=jpeg", files={"image": ("a.png", one_bit_pair[0])})
    _error(compress, 413, "too_much_memory")
    assert decoded == [] and app.state.service.memory.used == 0 and app.state.service.uploads.used == 0


@pytest.fixture()
def gate(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every single evaluation waits for the returned event."""
    opened = threading.Event()
    real = evaluate_routes.evaluate_single

    def slow(*args: Any) -> Any:
        opened.wait(30)
        return real(*args)

    monkeypatch.setattr(evaluate_routes, "evaluate_single", slow)
    return opened


def test_memory_in_use_answers_503_until_the_job_ends(
    started: Any, pair: tuple[bytes, bytes], gate: threading.Event
) -> None:
    one = 160 * 120 * PAIR_BYTES_PER_PIXEL["fast"]
    app, client = started(memory_budget=int(1.5 * one), max_queue=4, request_timeout=0.5)
    state = app.state.service
    first = client.post("/evaluate/single", files=_files(*pair))
    _error(first, 503, "timeout")
    assert state.memory.used == one  # the job still runs: its memory stays held
    second = client.post("/evaluate/single", files=_files(*pair))
    assert _error(second, 503, "overloaded")["reason"] == "memory"
    assert int(second.headers["Retry-After"]) >= 1
    gate.set()
    deadline = time.monotonic() + 20
    while state.memory.used and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state.memory.used == 0 and state.uploads.used == 0
    assert client.post("/evaluate/single", files=_files(*pair)).status_code == 200
    ready = client.get("/ready").json()["memory"]
    assert ready == {"budget": int(1.5 * one), "held": 0, "buffered_limit": state.uploads.limit, "buffered": 0}


def test_ticket_release_is_idempotent_and_unknown_sizes_are_capped() -> None:
    uploads, work = MemoryBudget("uploads", 100), MemoryBudget("memory", 1000)
    ticket = Ticket(uploads, work, retry_after=lambda: 3)
    ticket.hold_upload(60)
    ticket.hold_images(get_profile("fast"), [None], max_pixels=10**9)  # unknown: cut to the whole budget
    assert work.used == 1000
    other = Ticket(uploads, work, retry_after=lambda: 3)
    with pytest.raises(ServiceError) as refused:
        other.hold_upload(50)
    assert refused.value.status == 503 and refused.value.extra["reason"] == "uploads"
    ticket.release()
    ticket.release()
    assert uploads.used == 0 and work.used == 0
    with pytest.raises(ServiceError) as too_big:
        other.hold_images(get_profile("fast"), [10, 4], max_pixels=100)
    assert too_big.value.status == 413


def test_pool_calls_on_done_once_whatever_happens() -> None:
    """What a job holds is released when the job ends, or at once when the pool refuses it."""
    from optimizer.service.pool import Overloaded, PoolClosed, WorkPool

    pool = WorkPool(1, 0, torch_threads=None)
    done: list[str] = []
    gate = threading.Event()

    async def go() -> None:
        first = asyncio.create_task(pool.run(gate.wait, 10, timeout=10, on_done=lambda: done.append("first")))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await pool.run(time.sleep, 0, timeout=10, on_done=lambda: done.append("refused"))
        assert done == ["refused"]
        gate.set()
        await first
        await asyncio.sleep(0.05)

    asyncio.run(go())
    assert done == ["refused", "first"]
    pool.close()
    with pytest.raises(PoolClosed):
        asyncio.run(pool.run(time.sleep, 0, timeout=1, on_done=lambda: done.append("closed")))
    assert done == ["refused", "first", "closed"]


# --------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"body_timeout": -1}, "body_timeout"),
        ({"header_timeout": float("inf")}, "header_timeout"),
        ({"keep_alive_timeout": 0}, "keep_alive_timeout"),
        ({"max_connections": -3}, "max_connections"),
        ({"memory_budget": 0}, "memory_budget"),
        ({"max_buffered_bytes": MIB, "max_request_bytes": 4 * MIB, "max_file_bytes": MIB}, "whole request"),
        ({"backlog": 0}, "backlog"),
    ],
)
def test_connection_settings_are_validated(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServiceConfig(**values)


def test_zero_turns_a_limit_off_and_to_json_writes(tmp_path: Path) -> None:
    config = ServiceConfig(profiles=("fast",), header_timeout=0, body_timeout=0, max_connections=0)
    assert config.header_timeout is None and config.body_timeout is None and config.max_connections is None
    assert config.max_buffered_bytes == 2 * config.max_request_bytes
    text = config.to_json(tmp_path / "service.json")
    assert (tmp_path / "service.json").read_text() == text + "\n" and "\n  " in text
    assert "\n" not in config.to_json(indent=None)
    assert ServiceConfig.from_json(text) == config
