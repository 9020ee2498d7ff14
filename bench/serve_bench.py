"""Load on `vitaudio.serve`: requests/s, latency and errors at 1, 10 and 50 concurrent clients, and the server's
peak memory, over loopback.

    cd /work/main && OMP_NUM_THREADS=1 .venv/bin/python bench/serve_bench.py [--clients 1 10 50] [--requests 20]
                                                    [--model mini] [--checkpoint runs/x/best.pt] [--time-limit 120]

Starts `python -m vitaudio.serve CHECKPOINT --port 0 --device cpu` as a subprocess on 127.0.0.1 (a checkpoint with
random weights of the --model preset and train.py's default number of members unless --checkpoint names a real
one: speed does not depend on the weights) and, per level, has that many client threads POST the same seeded 30 s
music-like clip (melify_bench's generator, 22,050 Hz 16-bit WAV) to /api/predict, all started together, until the
level's requests are done (--requests, at least one per client) or --time-limit has passed. Reports, per level:
requests answered 200, errors (any other status, a reset, a timeout), requests/s over the level's wall time, p50
and p99 latency (connect to last byte), and the server's peak resident memory so far (VmHWM, Linux). The server
scores one clip at a time, so latency grows with the queue while requests/s stays that of one clip.
A benchmark: it prints numbers and asserts nothing.
"""
import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from infer_bench import random_checkpoint  # noqa: E402
from melify_bench import SECONDS, make_dataset  # noqa: E402


def start_server(checkpoint: Path) -> tuple[subprocess.Popen, str, int]:
    """The server as a subprocess -> (process, host, port), once it listens."""
    process = subprocess.Popen([sys.executable, "-m", "vitaudio.serve", str(checkpoint), "--port", "0",
                                "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    match = re.search(r"http://([^:/]+):(\d+)/", line)
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return process, match.group(1), int(match.group(2))


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory so far in MB (VmHWM); None where /proc does not say."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def post(host: str, port: int, body: bytes, timeout: float) -> tuple[int | str, float]:
    """One POST /api/predict -> (status or the error's name, seconds from connect to the last byte)."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("POST", "/api/predict?top_k=3", body=body, headers={"Content-Type": "audio/wav"})
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError as err:
        status = type(err).__name__
    finally:
        connection.close()
    return status, time.perf_counter() - start


def run_level(host: str, port: int, body: bytes, clients: int, requests: int, time_limit: float) -> dict:
    """`clients` threads sharing `requests` POSTs (at least one each), started together, stopped by the limit."""
    requests = max(requests, clients)
    results: list[tuple[int | str, float]] = []
    lock, barrier = threading.Lock(), threading.Barrier(clients)
    taken = 0
    deadline = time.monotonic() + time_limit

    def client() -> None:
        nonlocal taken
        barrier.wait()
        while True:
            with lock:
                if taken >= requests or time.monotonic() >= deadline:
                    return
                taken += 1
            outcome = post(host, port, body, timeout=max(1.0, deadline - time.monotonic()))
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    latencies = np.array([seconds for status, seconds in results if status == 200])
    errors = [status for status, _ in results if status != 200]
    return {"clients": clients, "sent": len(results), "ok": len(latencies), "errors": errors, "wall": wall,
            "per_s": len(latencies) / wall,
            "p50": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
            "p99": float(np.percentile(latencies, 99)) if len(latencies) else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=20, help="requests per level (at least one per client)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per level at most")
    parser.add_argument("--model", default="mini", help="ViT preset of the random checkpoint (infer_bench's syntax)")
    parser.add_argument("--checkpoint", type=Path, help="serve this checkpoint instead of a random one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint or random_checkpoint(tmp / "model.pt", args.model)
        body = make_dataset(tmp / "clips", 1, seed=0)[0].read_bytes()
        process, host, port = start_server(checkpoint)
        try:
            warm = post(host, port, body, timeout=args.time_limit)  # the first call loads what is loaded lazily
            print(f"serve_bench: {checkpoint.name if args.checkpoint else args.model + ' (random weights)'}, "
                  f"{SECONDS} s clip ({len(body) / 1e6:.2f} MB WAV), OMP_NUM_THREADS="
                  f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.2f}; "
                  f"warm-up request: {warm[0]} in {1e3 * warm[1]:.0f} ms; server RSS after it: "
                  f"{peak_rss_mb(process.pid) or float('nan'):.0f} MB")
            print("| clients | requests | 200 | errors | wall s | requests/s | p50 ms | p99 ms | server peak RSS MB |")
            print("|---|---|---|---|---|---|---|---|---|")
            for clients in args.clients:
                r = run_level(host, port, body, clients, args.requests, args.time_limit)
                kinds = sorted(set(r["errors"]), key=str)
                errors = ", ".join(f"{status} x{r['errors'].count(status)}" for status in kinds) or "0"
                rss = peak_rss_mb(process.pid) or float("nan")
                print(f"| {clients} | {r['sent']} | {r['ok']} | {errors} | {r['wall']:.1f} | {r['per_s']:.2f} "
                      f"| {1e3 * r['p50']:.0f} | {1e3 * r['p99']:.0f} | {rss:.0f} |", flush=True)
            print(f"load average at the end {os.getloadavg()[0]:.2f}")
        finally:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
