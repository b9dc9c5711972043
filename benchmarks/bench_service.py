"""What the web service adds to the evaluator: ``/evaluate/single`` at 1, 4 and 16 clients against in-process.

A real server (``optimizer serve`` under uvicorn, on 127.0.0.1) and the same evaluation done in this process
(the same Kodak pairs, the same profile, the same torch thread count per worker), in one run:

* 1 client: an in-process evaluation (decode both images and score, as the server does) and a request
  for the same pair alternate one by one; the service's added cost is the median of the per-pair ratios.
* 4 and 16 clients: each client sends its requests back to back; throughput is compared with the
  in-process evaluator running the same number of pairs on as many threads as the server's pool (its best
  case), in alternating blocks too, and latency percentiles show the queueing. 503s (queue full) are
  counted, not hidden.

Client and server share the machine, so the client's own work (sending 0.6 MB per request, reading JSON)
is counted against the service. Multipart bodies are built once per pair. The output is a markdown section
for ``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/bench_service.py [--profile default] [--requests 64] [--rounds 4] [--pool-size N]``
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("OPTIMIZER_DATASETS", REPO.parent / "shared" / "datasets"))
_SERVE = "import sys, optimizer.cli.serve_cmd; from optimizer.cli import main; sys.exit(main(sys.argv[1:]))"


def _pairs(count: int, quality: int) -> list[tuple[bytes, bytes]]:
    from PIL import Image

    out = []
    for path in sorted((DATASETS / "kodak").glob("kodim*.png"))[:count]:
        original = path.read_bytes()
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, "JPEG", quality=quality)
        out.append((original, buffer.getvalue()))
    if not out:
        sys.exit(f"no Kodak images under {DATASETS / 'kodak'} (set OPTIMIZER_DATASETS)")
    return out


def _multipart(original: bytes, processed: bytes) -> tuple[bytes, str]:
    boundary = "optimizer-bench-boundary-7d1f"
    parts = []
    for name, filename, data in (("original", "original.png", original), ("processed", "processed.jpg", processed)):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    command = [
        sys.executable,
        "-c",
        _SERVE,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--profile",
        args.profile,
        "--pool-size",
        str(args.pool_size),
        "--max-queue",
        str(args.max_queue),
        "--log-level",
        "warning",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OPTIMIZER_ALLOW_DOWNLOAD": "0"}
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    sys.exit(f"server not ready within 180 s:\n{log.read_text()}")


class _Client:
    """Sends prepared requests from ``clients`` concurrent connections (one asyncio loop, so that the client
    spends as little CPU as it can on a machine it shares with the server); records latency and status."""

    def __init__(self, base: str, bodies: list[tuple[bytes, str]]) -> None:
        self.base = base
        self.bodies = bodies

    def run(self, clients: int, total: int) -> tuple[float, list[float], dict[int, int], list[dict[str, Any]]]:
        import asyncio

        import httpx

        latencies: list[float] = []
        statuses: dict[int, int] = {}
        samples: list[dict[str, Any]] = []
        counter = iter(range(total))

        async def connection(http: httpx.AsyncClient) -> None:
            for i in counter:
                body, content_type = self.bodies[i % len(self.bodies)]
                started = time.perf_counter()
                response = await http.post("/evaluate/single", content=body, headers={"Content-Type": content_type})
                elapsed = time.perf_counter() - started
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    latencies.append(elapsed)
                    if len(samples) < len(self.bodies) and i < len(self.bodies):
                        samples.append({"i": i, **response.json()})

        async def main() -> float:
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(base_url=self.base, timeout=300, limits=limits) as http:
                started = time.perf_counter()
                await asyncio.gather(*(connection(http) for _ in range(clients)))
                return time.perf_counter() - started

        wall = asyncio.run(main())
        return wall, latencies, statuses, samples


def _alternate(count: int, in_process: Any, base: str, bodies: list[tuple[bytes, str]], pid: int) -> dict[str, Any]:
    """One client: in-process pair and request alternate one by one (order swapped every other time), so
    that slow drifts of the machine's load hit both alike; also the median of the per-pair ratios."""
    import httpx

    out: dict[str, Any] = {
        "times_in": [],
        "times_service": [],
        "statuses": {},
        "wall_in": 0.0,
        "wall_service": 0.0,
        "cpu_in": 0.0,
        "cpu_server": 0.0,
        "cpu_client": 0.0,
    }
    ratios = []
    with httpx.Client(base_url=base, timeout=300) as http:
        for k in range(count):
            i = k % len(bodies)

            def local() -> float:
                cpu = time.process_time()
                elapsed = in_process(i)
                out["cpu_in"] += time.process_time() - cpu
                return elapsed

            def remote() -> float:
                body, content_type = bodies[i]
                server_cpu, cpu, started = _process_cpu(pid), time.process_time(), time.perf_counter()
                response = http.post("/evaluate/single", content=body, headers={"Content-Type": content_type})
                elapsed = time.perf_counter() - started
                out["cpu_client"] += time.process_time() - cpu
                out["cpu_server"] += _process_cpu(pid) - server_cpu
                out["statuses"][response.status_code] = out["statuses"].get(response.status_code, 0) + 1
                return elapsed

            if k % 2:
                t_service, t_in = remote(), local()
            else:
                t_in, t_service = local(), remote()
            out["times_in"].append(t_in)
            out["times_service"].append(t_service)
            out["wall_in"] += t_in
            out["wall_service"] += t_service
            ratios.append(t_service / t_in)
    out["paired_ratio"] = statistics.median(ratios)
    return out


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--images", type=int, default=4, help="Kodak pairs (768x512 PNG vs JPEG)")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality of the processed images")
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of in-process and service blocks")
    parser.add_argument("--pool-size", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--max-queue", type=int, default=32)
    parser.add_argument("--torch-threads", type=int, default=1, help="as the server's workers (ServiceConfig)")
    parser.add_argument("--levels", default="1,4,16")
    args = parser.parse_args()

    import torch

    from optimizer.evaluator import Evaluator
    from optimizer.imageio import load_image

    pairs = _pairs(args.images, args.quality)
    bodies = [_multipart(o, p) for o, p in pairs]
    evaluator = Evaluator(args.profile).load()
    torch.set_num_threads(args.torch_threads)

    def in_process(i: int) -> float:
        original, processed = pairs[i % len(pairs)]
        started = time.perf_counter()
        evaluator.for_reference(load_image(original, max_pixels=16_000_000)).score(
            load_image(processed, max_pixels=16_000_000)
        )
        return time.perf_counter() - started

    def in_process_pool(total: int) -> tuple[float, list[float]]:
        def job(i: int) -> float:
            torch.set_num_threads(args.torch_threads)
            return in_process(i)

        started = time.perf_counter()
        with ThreadPoolExecutor(args.pool_size) as pool:
            times = list(pool.map(job, range(total)))
        return time.perf_counter() - started, times

    for i in range(len(pairs)):
        in_process(i)  # warm-up
    scratch = Path(tempfile.mkdtemp(prefix="bench-service-"))
    process, base = _start_server(args, scratch / "server.log")
    client = _Client(base, bodies)
    rows: list[dict[str, Any]] = []
    try:
        client.run(1, len(bodies))  # warm-up (and connection set-up) on the server side
        _, _, _, samples = client.run(1, len(bodies))
        for sample in samples:
            original, processed = pairs[sample["i"] % len(pairs)]
            want = evaluator.evaluate(load_image(original), load_image(processed)).composite
            if abs(sample["composite"] - want) > 1e-6:
                sys.exit(f"the service's composite {sample['composite']} differs from in-process {want}")
        levels = [int(x) for x in args.levels.split(",")]
        for clients in levels:
            if clients == 1:
                one = _alternate(args.requests, in_process, base, bodies, process.pid)
                paired_ratio = one.pop("paired_ratio")
                rows.append(
                    _row(
                        "in-process",
                        1,
                        args.requests,
                        one["wall_in"],
                        one["times_in"],
                        {200: args.requests},
                        cpu=one["cpu_in"],
                    )
                )
                rows.append(
                    _row(
                        "service",
                        1,
                        args.requests,
                        one["wall_service"],
                        one["times_service"],
                        one["statuses"],
                        cpu=one["cpu_server"],
                        client_cpu=one["cpu_client"],
                    )
                )
                rows[-1]["paired_ratio"] = paired_ratio
            else:
                per_round = max(clients, args.requests // args.rounds)
                wall_in = wall_service = cpu_in = cpu_server = cpu_client = 0.0
                times: list[float] = []
                latencies: list[float] = []
                statuses = {}
                for _ in range(args.rounds):
                    cpu = time.process_time()
                    wall, block = in_process_pool(per_round)
                    cpu_in += time.process_time() - cpu
                    wall_in += wall
                    times += block
                    server_cpu, cpu = _process_cpu(process.pid), time.process_time()
                    wall, block, codes, _ = client.run(clients, per_round)
                    cpu_server += _process_cpu(process.pid) - server_cpu
                    cpu_client += time.process_time() - cpu
                    wall_service += wall
                    latencies += block
                    for code, count in codes.items():
                        statuses[code] = statuses.get(code, 0) + count
                rows.append(
                    _row(
                        f"in-process ({args.pool_size} threads)",
                        clients,
                        len(times),
                        wall_in,
                        times,
                        {200: len(times)},
                        cpu=cpu_in,
                    )
                )
                rows.append(
                    _row(
                        "service",
                        clients,
                        per_round * args.rounds,
                        wall_service,
                        latencies,
                        statuses,
                        cpu=cpu_server,
                        client_cpu=cpu_client,
                    )
                )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    _report(rows, args, pairs)


def _row(
    mode: str,
    clients: int,
    requests: int,
    wall: float,
    latencies: list[float],
    statuses: dict[int, int],
    *,
    cpu: float = float("nan"),
    client_cpu: float = float("nan"),
) -> dict[str, Any]:
    ok = statuses.get(200, 0)
    return {
        "cpu_ms": cpu / max(requests, 1) * 1000,
        "client_cpu_ms": client_cpu / max(requests, 1) * 1000,
        "mode": mode,
        "clients": clients,
        "requests": requests,
        "ok": ok,
        "busy": statuses.get(503, 0),
        "errors": sum(v for k, v in statuses.items() if k not in (200, 503)),
        "rps": ok / wall if wall > 0 else float("nan"),
        "p50": _percentile(latencies, 50) * 1000,
        "p95": _percentile(latencies, 95) * 1000,
        "p99": _percentile(latencies, 99) * 1000,
        "median": statistics.median(latencies) if latencies else float("nan"),
    }


def _report(rows: list[dict[str, Any]], args: argparse.Namespace, pairs: list[tuple[bytes, bytes]]) -> None:
    by = {(r["mode"].split(" ")[0], r["clients"]): r for r in rows}
    command = (
        f"python benchmarks/bench_service.py --profile {args.profile} --requests {args.requests} "
        f"--rounds {args.rounds} --pool-size {args.pool_size} --max-queue {args.max_queue}"
    )
    mean_kb = statistics.mean(len(o) + len(p) for o, p in pairs) / 1024
    print(f"""## Web service: `/evaluate/single` against the in-process evaluator (`benchmarks/bench_service.py`)

Command: `{command}`

Machine: {platform.machine()}, {os.cpu_count()} cores (shared, noisy: compare ratios within this run), Python
{platform.python_version()}. Profile `{args.profile}`, {len(pairs)} Kodak pairs 768x512 (PNG original, JPEG
q{args.quality} processed; {mean_kb:.0f} KiB uploaded per request). Server: `optimizer serve` (uvicorn, one
process) with {args.pool_size} worker threads x {args.torch_threads} torch thread, queue bound {args.max_queue};
in-process: the same evaluator, same torch threads, decoding and scoring each pair. Client and server share
the machine. Latencies in ms; at 1 client in-process pairs and requests alternate one by one, at 4 and 16
clients in-process and service blocks alternate over {args.rounds} rounds; the in-process rows at 4 and 16
give each pair's own time on the busy pool (there is no queue in-process), the service rows the client's
time per request, queueing included.

CPU ms per pair: the evaluating process (this one in-process, the server's for the service) and, for the
service, the client's.

| mode | clients | requests | 200 | 503 | other errors | req/s | p50 | p95 | p99 | CPU ms/pair | client CPU ms |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|""")
    for r in rows:
        client_cpu = "" if r["client_cpu_ms"] != r["client_cpu_ms"] else f"{r['client_cpu_ms']:.1f}"
        print(
            f"| {r['mode']} | {r['clients']} | {r['requests']} | {r['ok']} | {r['busy']} | {r['errors']} | "
            f"{r['rps']:.2f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {r['cpu_ms']:.0f} | {client_cpu} |"
        )
    print()
    one_in, one_svc = by.get(("in-process", 1)), by.get(("service", 1))
    if one_in and one_svc:
        added = one_svc["paired_ratio"] - 1.0
        verdict = "meets" if added < 0.15 else "misses"
        print(
            f"- 1 client: the service's median latency is {one_svc['median'] * 1000:.0f} ms against "
            f"{one_in['median'] * 1000:.0f} ms in-process ({one_svc['median'] / one_in['median'] - 1:+.1%}); "
            f"the median of the per-pair ratios (request / in-process, taken back to back) is "
            f"**{added:+.1%}** ({verdict} the < 15 % target)."
        )
    for clients in sorted({r["clients"] for r in rows}):
        svc, ref = by.get(("service", clients)), by.get(("in-process", clients))
        if svc and ref:
            print(
                f"- {clients} client(s): the server spends {svc['cpu_ms']:.0f} CPU ms per request against "
                f"{ref['cpu_ms']:.0f} ms per pair in-process ({svc['cpu_ms'] / ref['cpu_ms'] - 1:+.1%}); the client "
                f"{svc['client_cpu_ms']:.1f} ms."
            )
        if svc and ref and clients > 1:
            print(
                f"- {clients} clients: {svc['rps']:.2f} req/s, {svc['rps'] / ref['rps']:.0%} of the in-process "
                f"throughput on {args.pool_size} threads ({ref['rps']:.2f} pairs/s); "
                f"{svc['busy']} answered 503, {svc['errors']} other errors; the client itself kept "
                f"{svc['client_cpu_ms'] * svc['rps'] / 1000:.2f} of the {os.cpu_count()} cores busy."
            )


if __name__ == "__main__":
    main()
