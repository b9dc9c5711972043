"""Connections that never finish a request, against a real server (``optimizer serve`` on 127.0.0.1).

A few hundred idle and half-sent connections must neither slow ``/health`` down (compared with the same
server idle, in the same test) nor stay open past the header timeout; past the connection cap the longest
idle ones are closed to make room (503 only when every connection is busy); stalled uploads hold at most the
buffered-bytes budget; the log stays small. The
guard's pieces (rate-limited log lines, the accept-error handler, the descriptor ceiling, the serve flags)
are also checked without a server.
"""

from __future__ import annotations

import functools
import logging
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_process import free_port, serve_command, served

pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")

from optimizer.service import ServiceConfig  # noqa: E402
from optimizer.service import server as server_module  # noqa: E402
from optimizer.service.server import (  # noqa: E402
    ConnectionLimits,
    GuardedH11Protocol,
    RateLimitedLog,
    effective_connection_cap,
    new_event_loop,
)

MIB = 1024 * 1024
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 3.0
MAX_CONNECTIONS = 400


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, subprocess.Popen[bytes], Path]]:
    folder = tmp_path_factory.mktemp("guarded")
    (folder / "service.toml").write_text("[service]\nwarm_up = false\n")
    log = folder / "server.log"
    port = free_port()
    command = serve_command(
        port,
        "--profile",
        "fast",
        "--pool-size",
        "1",
        "--config",
        str(folder / "service.toml"),
        "--header-timeout",
        str(HEADER_TIMEOUT),
        "--body-timeout",
        str(BODY_TIMEOUT),
        "--max-connections",
        str(MAX_CONNECTIONS),
        "--max-upload-mb",
        "4",
        "--max-request-mb",
        "8",
        "--max-buffered-mb",
        "16",
        "--log-level",
        "warning",
    )
    with served(command, port, log) as process:
        yield f"http://127.0.0.1:{port}", port, process, log


def _health_latencies(base: str, count: int) -> list[float]:
    """``count`` sequential /health requests, each on a new connection (as a load balancer probes)."""
    out = []
    for _ in range(count):
        started = time.perf_counter()
        response = httpx.get(f"{base}/health", timeout=10)
        out.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return out


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes ``sock`` before ``deadline`` (whatever it wrote first)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


@pytest.mark.slow
def test_idle_and_half_sent_connections(server: Any) -> None:
    base, port, _, log = server
    idle = _health_latencies(base, 40)
    opened_at = time.monotonic()
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(250)]
    partial = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    for sock in partial:
        sock.sendall(b"POST /evaluate/single HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data")
    try:
        loaded = _health_latencies(base, 40)
        assert _p99(loaded) < 5 * _p99(idle) + 0.25, (idle, loaded)
        deadline = opened_at + HEADER_TIMEOUT + 3.0
        still_open = [s for s in silent + partial if not _closed_by_server(s, deadline)]
        assert not still_open, f"{len(still_open)} connections still open {HEADER_TIMEOUT + 3} s after opening"
    finally:
        for sock in silent + partial:
            sock.close()
    text = log.read_text()
    assert "header_timeout" in text and len(text) < 20_000 and "Traceback" not in text


@pytest.mark.slow
def test_half_sent_headers_get_408(server: Any) -> None:
    _, port, _, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(HEADER_TIMEOUT + 5)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"header_timeout"' in answer


@pytest.mark.slow
def test_connections_past_the_cap_close_the_longest_idle(server: Any) -> None:
    """A flood of idle connections past the cap evicts its own oldest members; /health still gets in."""
    base, port, _, _ = server
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS + 40)]
    try:
        time.sleep(0.3)
        latencies = _health_latencies(base, 5)  # each evicts one more idle connection
        assert max(latencies) < 2.0
        deadline = time.monotonic() + 1.0
        closed = [i for i, sock in enumerate(held) if _closed_by_server(sock, deadline)]
        assert len(closed) >= 40 and closed[:40] == list(range(40)), closed[:50]  # the oldest went first
    finally:
        for sock in held:
            sock.close()


def _stall_upload(port: int, sent: list[int], stop: threading.Event) -> None:
    """Send headers for an 8 MB body, as much of it as the server takes, then nothing."""
    boundary = "stall"
    head = (
        f"POST /evaluate/single HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {8 * MIB - 1024}\r\n\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="original"; filename="a.png"\r\n\r\n'
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        chunk = b"\0" * 65536
        total = 0
        deadline = time.monotonic() + 2.0
        while total < 3 * MIB and time.monotonic() < deadline:
            try:
                total += sock.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
        sent.append(total)
        stop.wait(BODY_TIMEOUT + 10)


@pytest.mark.slow
def test_stalled_uploads_hold_bounded_memory(server: Any) -> None:
    base, port, process, _ = server
    rss = psutil.Process(process.pid)
    before = rss.memory_info().rss
    sent: list[int] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_stall_upload, args=(port, sent, stop), daemon=True) for _ in range(40)]
    for thread in threads:
        thread.start()
    peak = before
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        peak = max(peak, rss.memory_info().rss)
        time.sleep(0.05)
    ready = httpx.get(f"{base}/ready", timeout=10).json()
    stop.set()
    for thread in threads:
        thread.join(20)
    assert sum(sent) > 40 * MIB  # the clients did send (the server drains refused bodies)
    assert ready["memory"]["buffered"] <= 16 * MIB
    assert peak - before < 80 * MIB, f"RSS grew {(peak - before) / MIB:.0f} MiB under 40 stalled uploads"
    deadline = time.monotonic() + BODY_TIMEOUT + 5
    while time.monotonic() < deadline and httpx.get(f"{base}/ready", timeout=10).json()["memory"]["buffered"]:
        time.sleep(0.1)
    assert httpx.get(f"{base}/ready", timeout=10).json()["memory"]["buffered"] == 0


# --------------------------------------------------------------------------------------------------
# The pieces, without a server


def test_rate_limited_log_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("test.limited"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        assert limited.warning("accept", "cannot accept")
        for _ in range(500):
            assert not limited.warning("accept", "cannot accept")
        assert limited.warning("other", "a different kind")
        now[0] += 10.5
        assert limited.warning("accept", "cannot accept")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["cannot accept", "a different kind", "cannot accept (500 more like this in the last 10 s)"]


def test_accept_errors_are_one_line_not_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    loop = new_event_loop()
    try:
        handler = loop.get_exception_handler()
        assert handler is not None
        error = OSError(24, "Too many open files")
        with caplog.at_level(logging.WARNING):
            for _ in range(1000):
                handler(loop, {"message": "socket.accept() out of system resource", "exception": error})
        accept_lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
        assert len(accept_lines) <= 1 and all(r.exc_info is None for r in accept_lines)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            handler(loop, {"message": "something else"})
        assert any("something else" in r.getMessage() for r in caplog.records)
    finally:
        loop.close()


def test_connection_cap_stays_below_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module.resource, "getrlimit", lambda _kind: (1024, 4096))
    assert effective_connection_cap(1000) == 1024 - 64
    assert effective_connection_cap(100) == 100
    assert effective_connection_cap(None) == 1024 - 64


def test_serve_passes_the_connection_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import optimizer.cli.serve_cmd  # noqa: F401  (registers the command)
    from optimizer.cli import main

    seen: dict[str, Any] = {}

    def fake_run(app: Any, config: ServiceConfig, **options: Any) -> None:
        seen.update(config=config, options=options)

    monkeypatch.setattr(server_module, "run", fake_run)
    code = main(
        [
            "serve",
            "--profile",
            "fast",
            "--header-timeout",
            "0",
            "--body-timeout",
            "7",
            "--keep-alive-timeout",
            "2.5",
            "--max-connections",
            "123",
            "--backlog",
            "64",
            "--memory-budget-mb",
            "512",
            "--max-buffered-mb",
            "400",
        ]
    )
    assert code == 0
    config = seen["config"]
    assert config.header_timeout is None and config.body_timeout == 7 and config.keep_alive_timeout == 2.5
    assert config.max_connections == 123 and config.backlog == 64
    assert config.memory_budget == 512 * MIB and config.max_buffered_bytes == 400 * MIB
    assert ConnectionLimits.from_config(config) == ConnectionLimits(header_timeout=None, max_connections=123)


def _serve_in_thread(app: Any, config: ServiceConfig) -> tuple[Any, int, threading.Thread]:
    import uvicorn

    port = free_port()
    settings = uvicorn.Config(
        app,
        port=port,
        http=functools.partial(GuardedH11Protocol, limits=ConnectionLimits.from_config(config)),  # type: ignore[arg-type]
        loop="optimizer.service.server:new_event_loop",
        log_level="warning",
        lifespan="off",
    )
    uvicorn_server = uvicorn.Server(settings)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return uvicorn_server, port, thread


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, then answers ok."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_guarded_protocol_under_uvicorn() -> None:
    """The protocol and the loop factory as uvicorn loads them: the header timeout, and a cap of 3 that evicts
    idle connections but answers 503 when every connection is busy with a request."""
    served, port, thread = _serve_in_thread(
        _echo_app, ServiceConfig(profiles=("fast",), header_timeout=1.0, max_connections=3)
    )
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"
        with socket.create_connection(("127.0.0.1", port)) as silent:
            assert _closed_by_server(silent, time.monotonic() + 3)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"  # evicts the oldest idle one
        assert _closed_by_server(idle[0], time.monotonic() + 1)
        for sock in idle:
            sock.close()
        busy = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        for sock in busy:  # requests in progress: their bodies never finish
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port)) as late:
            late.settimeout(3)
            assert late.recv(4096).startswith(b"HTTP/1.1 503 ")
        for sock in busy:
            sock.close()
    finally:
        served.should_exit = True
        thread.join(10)
