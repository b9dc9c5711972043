"""The web service under clients that hold connections and uploads without finishing them: before and after.

Two servers in one run, each on 127.0.0.1 with the ``fast`` profile: **before** is ``optimizer serve`` from a
baseline ref of this repository (``--baseline main``: exported with ``git archive``, nothing checked out),
**after** is this tree with its default limits. Each phase starts a fresh server of each kind:

* **idle**: ``--idle`` silent connections (below the connection cap) held for ``header_timeout + 5`` s:
  ``/health`` latency (a new connection per probe) idle and under that load, the connections the server
  closed by itself, the log's growth;
* **flood**: the server's file descriptor limit is set to ``--fd-limit`` and up to ``--flood`` connections
  are opened (more than it can hold; each connect may wait 0.5 s) during ``--flood-seconds``: ``/health``
  answers and failures meanwhile, the log's growth (accept errors), the connections still open at the end;
* **uploads**: ``--uploads`` uploads of 24 MB that send what the server takes for 2 s and then stall:
  the server's resident memory growth (peak, sampled every 50 ms);
* **big pair** (``--big-pair``): two 4000x4000 one-bit PNGs in one small request: time and peak memory,
  and for the after-server also with ``--memory-budget-mb 4096``.

Prints a markdown section for ``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/bench_service_hostile.py [--baseline main] [--idle 800] [--flood 5000] [--big-pair]``
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
_SERVE = "import sys, optimizer.cli.serve_cmd; from optimizer.cli import main; sys.exit(main(sys.argv[1:]))"
#: The after-server's header timeout (its default).
HEADER_TIMEOUT = 10.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    port: int
    log: Path
    pid: int = field(init=False)

    def __post_init__(self) -> None:
        self.pid = self.process.pid


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _export(ref: str, into: Path) -> Path:
    """The tree of ``ref`` (``git archive``: no checkout, no worktree), for the baseline server."""
    data = subprocess.run(["git", "archive", ref, "optimizer"], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(into, filter="data")
    return into


@contextmanager
def _server(root: Path, extra: list[str], scratch: Path, *, fd_limit: int | None = None) -> Iterator[Server]:
    import httpx

    port = _free_port()
    log = scratch / f"server-{port}.log"
    (scratch / "service.toml").write_text("[service]\nwarm_up = false\n")
    command = [sys.executable, "-c", _SERVE, "serve", "--port", str(port), "--profile", "fast", "--pool-size", "1"]
    command += ["--config", str(scratch / "service.toml"), "--log-level", "warning", *extra]

    def limit() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    env = {**os.environ, "PYTHONPATH": str(root), "OPTIMIZER_ALLOW_DOWNLOAD": "0"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, preexec_fn=limit)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                sys.exit(f"server exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"server not ready within 180 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield Server(process, base, port, log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _probe(base: str, timeout: float = 2.0) -> float | None:
    """One /health on a new connection: seconds, or ``None`` when it failed or took over ``timeout``."""
    import httpx

    started = time.perf_counter()
    try:
        ok = httpx.get(f"{base}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return None
    return time.perf_counter() - started if ok else None


def _p(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _connect(port: int, count: int, timeout: float = 1.0) -> list[socket.socket]:
    out = []
    for _ in range(count):
        try:
            out.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        except OSError:
            continue
    return out


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b"" or _closed(sock)
    except BlockingIOError:
        return False
    except OSError:
        return True


def _phase_idle(server: Server, count: int) -> dict[str, Any]:
    idle = [t for t in (_probe(server.base) for _ in range(60)) if t is not None]
    log_before = server.log.stat().st_size
    socks = _connect(server.port, count)
    loaded: list[float] = []
    failed = 0
    deadline = time.monotonic() + HEADER_TIMEOUT + 5
    while time.monotonic() < deadline:
        t = _probe(server.base)
        if t is None:
            failed += 1
        else:
            loaded.append(t)
        time.sleep(0.05)
    closed = sum(_closed(s) for s in socks)
    for sock in socks:
        sock.close()
    return {
        "held": len(socks),
        "idle_p50": _p(idle, 50) * 1000,
        "idle_p99": _p(idle, 99) * 1000,
        "loaded_p50": _p(loaded, 50) * 1000,
        "loaded_p99": _p(loaded, 99) * 1000,
        "probes": len(loaded) + failed,
        "failed": failed,
        "closed": closed,
        "log_bytes": server.log.stat().st_size - log_before,
    }


def _open_until(port: int, count: int, stop: threading.Event, into: list[socket.socket]) -> None:
    """Open up to ``count`` connections (0.5 s each at most) until ``stop`` is set."""
    for _ in range(count):
        if stop.is_set():
            return
        try:
            into.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
        except OSError:
            continue


def _phase_flood(server: Server, count: int, seconds: float) -> dict[str, Any]:
    log_before = server.log.stat().st_size
    socks: list[socket.socket] = []
    stop = threading.Event()
    opener = threading.Thread(target=_open_until, args=(server.port, count, stop, socks), daemon=True)
    opener.start()
    answered: list[float] = []
    failed = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        t = _probe(server.base)
        if t is None:
            failed += 1
        else:
            answered.append(t)
    stop.set()
    opener.join(10)
    still_open = sum(not _closed(s) for s in socks)
    for sock in socks:
        sock.close()
    return {
        "opened": len(socks),
        "answered": len(answered),
        "failed": failed,
        "p50": _p(answered, 50) * 1000,
        "p99": _p(answered, 99) * 1000,
        "still_open": still_open,
        "log_bytes": server.log.stat().st_size - log_before,
    }


def _stall(port: int, size: int, stop: threading.Event, sent: list[int]) -> None:
    boundary = "stall"
    head = (
        f"POST /evaluate/single HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {size}\r\n\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="original"; filename="a.png"\r\n\r\n'
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head)
            sock.setblocking(False)
            chunk, total = b"\0" * 65536, 0
            deadline = time.monotonic() + 2.0
            while total < size - MIB and time.monotonic() < deadline:
                try:
                    total += sock.send(chunk)
                except BlockingIOError:
                    time.sleep(0.005)
            sent.append(total)
            stop.wait(30)
    except OSError:
        sent.append(0)


def _phase_uploads(server: Server, count: int) -> dict[str, Any]:
    import psutil

    process = psutil.Process(server.pid)
    before = process.memory_info().rss
    stop, sent = threading.Event(), []
    threads = [threading.Thread(target=_stall, args=(server.port, 24 * MIB, stop, sent)) for _ in range(count)]
    for thread in threads:
        thread.start()
    peak = before
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.05)
    health = _probe(server.base, timeout=5)
    stop.set()
    for thread in threads:
        thread.join(30)
    return {
        "uploads": count,
        "sent_mb": sum(sent) / MIB,
        "rss_before_mb": before / MIB,
        "rss_growth_mb": (peak - before) / MIB,
        "health_ms": health * 1000 if health is not None else float("nan"),
    }


def _one_bit_png(side: int, flip: bool) -> bytes:
    from PIL import Image

    image = Image.new("1", (side, side), 0)
    image.paste(1, (0, 0, side // 2, side))
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _phase_big_pair(server: Server) -> dict[str, Any]:
    import httpx
    import psutil

    original, processed = _one_bit_png(4000, False), _one_bit_png(4000, True)
    process = psutil.Process(server.pid)
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    response = httpx.post(
        f"{server.base}/evaluate/single",
        files={"original": ("a.png", original), "processed": ("b.png", processed)},
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join(5)
    time.sleep(1.0)
    return {
        "request_kb": (len(original) + len(processed)) / 1024,
        "status": response.status_code,
        "type": response.json().get("error", {}).get("type", "") if response.status_code != 200 else "",
        "seconds": elapsed,
        "peak_growth_mb": (peak[0] - before) / MIB,
        "after_mb": (process.memory_info().rss - before) / MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git ref of the before-server")
    parser.add_argument("--idle", type=int, default=800, help="silent connections in the idle phase")
    parser.add_argument("--flood", type=int, default=5000, help="connections in the flood phase")
    parser.add_argument("--fd-limit", type=int, default=2048, help="the servers' descriptor limit in the flood")
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    parser.add_argument("--uploads", type=int, default=40, help="stalled 24 MB uploads")
    parser.add_argument("--big-pair", action="store_true", help="also two 4000x4000 one-bit PNGs (slow)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    baseline = _export(args.baseline, scratch / "baseline")
    revision = subprocess.run(
        ["git", "rev-parse", "--short", args.baseline], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    variants = {"before": (baseline, []), "after": (REPO, [])}
    results: dict[str, dict[str, Any]] = {name: {} for name in variants}
    for name, (root, extra) in variants.items():
        with _server(root, extra, scratch) as server:
            results[name]["idle"] = _phase_idle(server, args.idle)
        with _server(root, extra, scratch, fd_limit=args.fd_limit) as server:
            results[name]["flood"] = _phase_flood(server, args.flood, args.flood_seconds)
        with _server(root, extra, scratch) as server:
            results[name]["uploads"] = _phase_uploads(server, args.uploads)
        if args.big_pair:
            with _server(root, extra, scratch) as server:
                results[name]["big"] = _phase_big_pair(server)
    if args.big_pair:
        with _server(REPO, ["--memory-budget-mb", "4096"], scratch) as server:
            results["after, 4 GB budget"] = {"big": _phase_big_pair(server)}
    _report(results, args, revision)


def _report(results: dict[str, dict[str, Any]], args: argparse.Namespace, revision: str) -> None:
    command = (
        f"python benchmarks/bench_service_hostile.py --baseline {args.baseline} --idle {args.idle} "
        f"--flood {args.flood} --fd-limit {args.fd_limit} --uploads {args.uploads}"
        + (" --big-pair" if args.big_pair else "")
    )
    print(f"""## Web service under hostile clients: before and after (`benchmarks/bench_service_hostile.py`)

Command: `{command}`

Before: `optimizer serve` of `{args.baseline}` ({revision}); after: this tree, default limits (header timeout
{HEADER_TIMEOUT:g} s, body timeout 30 s, 1000 connections, bodies held 2 x the request limit). Both: profile
`fast`, 1 worker thread, on 127.0.0.1; client and server share the machine. A fresh server per phase.
""")
    print(
        f"Idle phase: {args.idle} silent connections held {HEADER_TIMEOUT + 5:g} s; `/health` on a new connection "
        "every 50 ms (ms).\n"
    )
    print(
        "| server | held | /health p50 idle | p99 idle | p50 loaded | p99 loaded | failed probes | closed by server | log bytes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("before", "after"):
        r = results[name]["idle"]
        print(
            f"| {name} | {r['held']} | {r['idle_p50']:.1f} | {r['idle_p99']:.1f} | {r['loaded_p50']:.1f} | "
            f"{r['loaded_p99']:.1f} | {r['failed']}/{r['probes']} | {r['closed']} | {r['log_bytes']:,} |"
        )
    print(
        f"\nFlood phase: descriptor limit {args.fd_limit}, up to {args.flood} connections opened, `/health` probed for "
        f"{args.flood_seconds:g} s (2 s timeout).\n"
    )
    print(
        "| server | connections opened | /health answered | failed | p50 ms | p99 ms | still open at the end | log bytes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("before", "after"):
        r = results[name]["flood"]
        print(
            f"| {name} | {r['opened']} | {r['answered']} | {r['failed']} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['still_open']} | {r['log_bytes']:,} |"
        )
    print(
        f"\nUploads phase: {args.uploads} uploads declaring 24 MB, sending what the server takes for 2 s, then "
        "stalling; the server's RSS sampled for 6 s.\n"
    )
    print("| server | MB sent by the clients | RSS before (MB) | RSS growth, peak (MB) | /health while stalled (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name in ("before", "after"):
        r = results[name]["uploads"]
        print(
            f"| {name} | {r['sent_mb']:.0f} | {r['rss_before_mb']:.0f} | {r['rss_growth_mb']:.0f} | "
            f"{r['health_ms']:.0f} |"
        )
    big = {name: r["big"] for name, r in results.items() if "big" in r}
    if big:
        print("\nBig pair: two 4000x4000 one-bit PNGs in one request.\n")
        print("| server | request KB | status | seconds | RSS growth, peak (MB) | RSS growth after (MB) |")
        print("|---|---:|---|---:|---:|---:|")
        for name, r in big.items():
            status = f"{r['status']} {r['type']}".strip()
            print(
                f"| {name} | {r['request_kb']:.1f} | {status} | {r['seconds']:.2f} | {r['peak_growth_mb']:.0f} | "
                f"{r['after_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
