"""serve.py under load on loopback: requests/s and latency at 1, 4 and 16 concurrent clients, dynamic batching
(max_batch_size=16) against one request per engine call (max_batch_size=1).

Model: the offline default (a completed ``python train.py`` run under outputs/train, trained if there is none:
bench_predict's ``default_model``). Dialogues: DialogSum test (../shared/data/dialogsum/test.jsonl) if present,
else synthetic test dialogues. Each server (``python serve.py``, 127.0.0.1, a free port, the API alone, default
generation: beams 4) is started in turn; its memory (PSS of its processes: main, workers, API process, LitServe's
manager) is read once it is ready and again after the load. Each level runs ``clients`` clients, each sending one
dialogue at a time, ``--requests-per-client`` each (bounded by ``--seconds`` per level). Every answer is checked
against the summary its dialogue got alone (each dialogue sent once, one request at a time, to the batch-1 server
before its levels): a request answered with another's summary, or not answered, is counted as wrong.

    .venv/bin/python benchmarks/bench_serve.py                     # the figures (the lead runs it on a quiet machine)
    .venv/bin/python benchmarks/bench_serve.py --dialogues 16 --requests-per-client 2 --seconds 30   # a smoke test

Goal (issue 21): at 16 clients, dynamic batching at least 2x the requests/s of batch size 1, and p99 latency at
16 clients at most 4x the p50 at 1 client; nothing lost. Last line:
``serve: <r> req/s at 16 clients (<x>x batch 1), p99 <ms> ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM_TEST = REPO.parent / "shared" / "data" / "dialogsum" / "test.jsonl"
LEVELS = (1, 4, 16)
START_TIMEOUT = 600


def dialogues(count: int) -> tuple[list[str], str]:
    if DIALOGSUM_TEST.is_file():
        with open(DIALOGSUM_TEST, encoding="utf-8") as f:
            rows = [json.loads(line)["dialogue"] for line, _ in zip(f, range(count))]
        return rows, f"DialogSum test ({DIALOGSUM_TEST})"
    from sumlab.data import synthetic

    return [r["dialogue"] for r in synthetic.generate_split("test", count, 42)], "synthetic test dialogues"


def pss_mib(root: int) -> float:
    """Proportional set size of `root` and its descendants (shared pages counted once, split between them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return total / 1024


def start(model_dir: Path, batch: int, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "w") as out:
        command = [sys.executable, "serve.py", f"model_dir={model_dir}", f"port={port}", "ui=false",
                   f"max_batch_size={batch}"]  # fmt: skip
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"error: serve.py did not start (see {log}):\n{log.read_text()[-2000:]}")


async def load(url: str, texts: list[str], clients: int, per_client: int, seconds: float) -> dict[str, Any]:
    """`clients` clients, each sending its dialogues one at a time; latencies and answers by dialogue index."""
    latencies: list[float] = []
    answers: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + seconds

    async def client(c: int, http: httpx.AsyncClient) -> None:
        for k in range(per_client):
            if time.monotonic() > deadline:
                return
            index = (c * per_client + k) % len(texts)
            sent = time.perf_counter()
            try:
                res = await http.post(f"{url}/v1/summarize", json={"text": texts[index]})
                summary = res.json()["summary"] if res.status_code == 200 else None
            except httpx.HTTPError:
                summary = None
            latencies.append(time.perf_counter() - sent)
            answers.append((index, summary))

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(c, http) for c in range(clients)))
    wall = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    return {"clients": clients, "requests": len(ms), "rps": len(ms) / wall, "p50": statistics.median(ms),
            "p99": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], "answers": answers}  # fmt: skip


def solo(url: str, texts: list[str]) -> dict[int, str]:
    """Each dialogue's summary when it is the only request: the answers every level is checked against."""
    return {i: httpx.post(f"{url}/v1/summarize", json={"text": t}, timeout=300).json()["summary"]
            for i, t in enumerate(texts)}  # fmt: skip


def bench_server(args: argparse.Namespace, model_dir: Path, batch: int, texts: list[str],
                 reference: dict[int, str] | None) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:  # fmt: skip
    """One server at every level: (results by clients, the reference answers: `reference`, else taken here)."""
    proc, url = start(model_dir, batch, Path(args.log_dir) / f"serve-batch{batch}.log")
    try:
        before = pss_mib(proc.pid)
        print(f"max_batch_size={batch}: server memory {before:.0f} MiB once ready", flush=True)
        reference = reference or solo(url, texts)
        results: dict[int, dict[str, Any]] = {}
        for clients in LEVELS:
            r = asyncio.run(load(url, texts, clients, args.requests_per_client, args.seconds))
            r["wrong"] = sum(s != reference[i] for i, s in r["answers"])  # None: not answered
            results[clients] = r
            print(f"  {clients:2d} clients: {r['rps']:7.2f} req/s, p50 {r['p50']:7.0f} ms, p99 {r['p99']:7.0f} ms, "
                  f"{r['requests']} requests, {r['wrong']} wrong or lost", flush=True)  # fmt: skip
        after = pss_mib(proc.pid)
        print(f"  server memory after: {after:.0f} MiB ({after - before:+.0f})", flush=True)
        return results, reference
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=None, help="a run to serve (default: the offline default, trained once)")
    ap.add_argument("--dialogues", type=int, default=48, help="distinct dialogues the clients cycle through")
    ap.add_argument("--requests-per-client", type=int, default=12, help="requests each client sends per level")
    ap.add_argument("--seconds", type=float, default=120, help="time bound per level")
    ap.add_argument("--log-dir", default=None, help="where the servers' logs go (default: a temporary directory)")
    args = ap.parse_args()
    from bench_predict import default_model  # this directory is on sys.path when run as a script

    model_dir = Path(args.model_dir) if args.model_dir else default_model([])
    texts, source = dialogues(args.dialogues)
    if args.log_dir is None:
        import tempfile

        args.log_dir = tempfile.mkdtemp(prefix="bench-serve-")
    print(f"{len(texts)} dialogues from {source}, mean {statistics.mean(map(len, texts)):.0f} characters; model "
          f"{model_dir}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; logs in {args.log_dir}",
          flush=True)  # fmt: skip
    single, reference = bench_server(args, model_dir, 1, texts, None)  # first: one request at a time is the truth
    batched, _ = bench_server(args, model_dir, 16, texts, reference)
    top, base = batched[LEVELS[-1]], single[LEVELS[-1]]
    speedup = top["rps"] / base["rps"]
    lost = sum(r["wrong"] for r in (*single.values(), *batched.values()))
    goal = speedup >= 2 and top["p99"] <= 4 * batched[1]["p50"] and lost == 0
    print(
        f"goal (>= 2x batch 1 at 16 clients, p99 <= 4x the 1-client p50, nothing lost): {'met' if goal else 'not met'}"
        f" ({speedup:.2f}x, p99 {top['p99']:.0f} ms vs 4 x {batched[1]['p50']:.0f} ms, {lost} wrong or lost)"
    )
    print(f"serve: {top['rps']:.2f} req/s at 16 clients ({speedup:.2f}x batch 1), p99 {top['p99']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
