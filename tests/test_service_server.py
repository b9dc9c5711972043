"""A real server: ``optimizer serve`` under uvicorn on 127.0.0.1, 50 concurrent requests, all answered right.

The queue bound (pool 2 + queue 64) is above the 50 requests in flight, so every one must get a 200 with the
scores the in-process evaluator gives; an oversized upload must get its 413 over the real HTTP stack (the
server reads and drops the rest of the body so the client can read the answer).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from service_process import free_port, serve_command, served

pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from optimizer.evaluator import Evaluator  # noqa: E402
from optimizer.imageio import load_image  # noqa: E402

REQUESTS = 50


def _encode(image: PILImage.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "OPTIMIZER_ALLOW_DOWNLOAD": "0"}
    options = ["--profile", "fast", "--pool-size", "2", "--max-queue", "64", "--max-upload-mb", "1"]
    with served(serve_command(port, *options, "--log-level", "warning"), port, log, env) as process:
        yield f"http://127.0.0.1:{port}", process


@pytest.mark.slow
def test_fifty_concurrent_requests(server: Any, kodak_paths: list[Path]) -> None:
    base, process = server
    pairs = []
    for path in kodak_paths[:5]:
        crop = PILImage.open(path).convert("RGB").crop((256, 128, 512, 320))
        pairs.append((_encode(crop, "PNG"), _encode(crop, "JPEG", quality=50)))
    evaluator = Evaluator("fast")
    expected = [evaluator.evaluate(load_image(o), load_image(p)) for o, p in pairs]

    async def send_all() -> list[Any]:
        limits = httpx.Limits(max_connections=REQUESTS)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

            async def one(i: int) -> Any:
                original, processed = pairs[i % len(pairs)]
                files = {"original": (f"{i}.png", original), "processed": (f"{i}.jpg", processed)}
                return await client.post("/evaluate/single", files=files)

            return await asyncio.gather(*(one(i) for i in range(REQUESTS)))

    started = time.perf_counter()
    responses = asyncio.run(send_all())
    elapsed = time.perf_counter() - started
    assert [r.status_code for r in responses] == [200] * REQUESTS, [r.text for r in responses if r.status_code != 200]
    for i, response in enumerate(responses):
        body = response.json()
        want = expected[i % len(pairs)]
        assert body["distorted"] == f"{i}.jpg" and body["profile"] == "fast"
        assert body["scores"] == pytest.approx(want.scores, rel=1e-6)
        assert body["composite"] == pytest.approx(want.composite, rel=1e-6)
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    line = 'optimizer_http_requests_total{endpoint="/evaluate/single",method="POST",status="200"}'
    assert any(row.startswith(line) and float(row.split()[-1]) >= REQUESTS for row in metrics.splitlines())
    assert elapsed < 120 and process.poll() is None


@pytest.mark.slow
def test_oversized_upload_gets_413_over_http(server: Any) -> None:
    base, _ = server
    files = {"original": ("big.png", b"\0" * (3 * 1024 * 1024)), "processed": ("b.png", b"x")}
    response = httpx.post(f"{base}/evaluate/single", files=files, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "too_large"
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200


@pytest.mark.slow
def test_server_stops_cleanly(server: Any) -> None:
    """Last in this module: SIGINT drains and exits 0."""
    _, process = server
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
