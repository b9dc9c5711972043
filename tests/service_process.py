"""``optimizer serve`` in a real process for the tests that need its sockets: a free port, the command line,
and a context that starts the server, waits until ``/ready`` answers and stops it with Ctrl-C (SIGINT)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["free_port", "serve_command", "served"]

_SERVE = "import sys, optimizer.cli.serve_cmd; from optimizer.cli import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(port: int, *options: str) -> list[str]:
    """``optimizer serve --host 127.0.0.1 --port PORT OPTIONS`` run by this Python."""
    return [sys.executable, "-c", _SERVE, "serve", "--host", "127.0.0.1", "--port", str(port), *options]


@contextlib.contextmanager
def served(
    command: list[str], port: int, log: Path, env: dict[str, str] | None = None, *, ready_within: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (its output to ``log``) until ``http://127.0.0.1:PORT/ready`` answers 200, yield the
    process, and stop it with SIGINT afterwards (killed if it has not stopped within 30 s)."""
    import httpx

    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env or {**os.environ})
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready within {ready_within:g} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
