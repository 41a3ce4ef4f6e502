"""serve.py under load on loopback: requests/s and latency at 1, 4 and 16 concurrent clients, dynamic batching
(max_batch_size=16) against one request per engine call (max_batch_size=1).

Model: the offline default (a completed ``python train.py`` run under outputs/train, trained if there is none:
bench_predict's ``default_model``). Dialogues: DialogSum test (../shared/data/dialogsum/test.jsonl) if present,
else synthetic test dialogues. Both servers (``python serve.py``, 127.0.0.1, free ports, the API alone, default
generation: beams 4, plus --server-args) run at once, an idle one waiting on its queue; their memory (PSS of their
processes: main, workers, API process, LitServe's manager) is read once ready and again after the load. Each level
runs ``clients`` clients, each sending one dialogue at a time, ``--requests-per-client`` each (bounded by
``--seconds`` per level), on one server, then the other; --repeats passes over the levels, figures are medians
with their ranges. Every answer is checked against the summary its dialogue got alone (each dialogue sent once,
one request at a time, to the batch-1 server before any level): a request answered with another's summary, or not
answered, is counted as wrong. Each level also reports, from the answers' ``timing``, the mean size of the batch a
request ran in and that batch's engine time: what is left of the latency is queueing, HTTP and LitServe.

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
from figures import machine, median_range  # this directory is on sys.path when a script here runs

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM_TEST = REPO.parent / "shared" / "data" / "dialogsum" / "test.jsonl"
LEVELS = (1, 4, 16)
BATCHES = (1, 16)  # max_batch_size: one request per engine call, then dynamic batching
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


def start(model_dir: Path, batch: int, log: Path, extra: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "w") as out:
        command = [sys.executable, "serve.py", f"model_dir={model_dir}", f"port={port}", "ui=false",
                   f"max_batch_size={batch}", *extra.split()]  # fmt: skip
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
    batches: list[tuple[int, float]] = []  # (texts in the batch, its engine seconds) per answered request
    deadline = time.monotonic() + seconds

    async def client(c: int, http: httpx.AsyncClient) -> None:
        for k in range(per_client):
            if time.monotonic() > deadline:
                return
            index = (c * per_client + k) % len(texts)
            sent = time.perf_counter()
            try:
                res = await http.post(f"{url}/v1/summarize", json={"text": texts[index]})
                body = res.json() if res.status_code == 200 else None
                summary = body["summary"] if body else None
                if body:
                    batches.append((body["timing"]["batch_texts"], body["timing"]["generate_seconds"]))
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
            "p99": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], "answers": answers,
            "batch": statistics.mean(b for b, _ in batches) if batches else 0.0,
            "engine_ms": 1000 * statistics.mean(s for _, s in batches) if batches else 0.0}  # fmt: skip


def solo(url: str, texts: list[str]) -> dict[int, str]:
    """Each dialogue's summary when it is the only request: the answers every level is checked against."""
    return {i: httpx.post(f"{url}/v1/summarize", json={"text": t}, timeout=300).json()["summary"]
            for i, t in enumerate(texts)}  # fmt: skip


def engine_alone(overrides: list[str], texts: list[str], repeats: int) -> dict[int, list[float]]:
    """The most dynamic batching can gain before HTTP and queueing: the server's engine (serve.engine: the same
    conversion, threads and default settings) in this process, texts/s over the dialogues in calls of 1 and of 16,
    interleaved, after a warm-up call. Run with the servers stopped."""
    from bench_predict import compose  # this directory is on sys.path when run as a script

    from sumlab.serve.engine import Summarizer, prepare
    from sumlab.serve.runner import cpu_threads

    cfg = compose(overrides, config_name="serve")
    spec = prepare(cfg)
    engine = Summarizer(spec, "cpu", cpu_threads(cfg))
    engine.summarize(texts[:16], spec.defaults)
    rates: dict[int, list[float]] = {batch: [] for batch in BATCHES}
    for _ in range(repeats):
        for batch in BATCHES:
            started = time.perf_counter()
            for k in range(0, len(texts), batch):
                engine.summarize(texts[k : k + batch], spec.defaults)
            rates[batch].append(len(texts) / (time.perf_counter() - started))
    return rates


def run_level(url: str, texts: list[str], clients: int, args: argparse.Namespace, reference: dict[int, str]) -> dict:
    r = asyncio.run(load(url, texts, clients, args.requests_per_client, args.seconds))
    r["wrong"] = sum(s != reference[i] for i, s in r["answers"])  # None: not answered
    return r


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of one server and level, with each figure's range."""
    out = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99", "batch", "engine_ms")}
    out["range"] = {k: (min(r[k] for r in runs), max(r[k] for r in runs)) for k in ("rps", "p50", "p99")}
    out["requests"], out["wrong"] = sum(r["requests"] for r in runs), sum(r["wrong"] for r in runs)
    return out


def report(batch: int, results: dict[int, dict[str, Any]]) -> None:
    print(f"max_batch_size={batch} (medians of the repeats; ranges in brackets)")
    for clients, r in results.items():
        rng = r["range"]
        print(f"  {clients:2d} clients: {r['rps']:7.2f} req/s [{rng['rps'][0]:.1f}-{rng['rps'][1]:.1f}], p50 "
              f"{r['p50']:5.0f} ms [{rng['p50'][0]:.0f}-{rng['p50'][1]:.0f}], p99 {r['p99']:5.0f} ms "
              f"[{rng['p99'][0]:.0f}-{rng['p99'][1]:.0f}]; {r['requests']} requests, {r['wrong']} wrong or lost; "
              f"batches of {r['batch']:.1f} texts, engine {r['engine_ms']:.0f} ms per batch", flush=True)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=None, help="a run to serve (default: the offline default, trained once)")
    ap.add_argument("--dialogues", type=int, default=48, help="distinct dialogues the clients cycle through")
    ap.add_argument("--requests-per-client", type=int, default=12, help="requests each client sends per level")
    ap.add_argument("--seconds", type=float, default=120, help="time bound per level")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the levels, the two servers interleaved")
    ap.add_argument("--server-args", default="", help="serve.py overrides for both servers, space-separated")
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
    servers = {}
    try:
        for batch in BATCHES:  # both up at once (an idle server waits on its queue), so the passes interleave
            servers[batch] = start(model_dir, batch, Path(args.log_dir) / f"serve-batch{batch}.log", args.server_args)
        memory = {batch: [pss_mib(proc.pid)] for batch, (proc, _) in servers.items()}
        reference = solo(servers[1][1], texts)  # one request at a time, the first thing asked: the truth
        runs: dict[int, dict[int, list]] = {batch: {c: [] for c in LEVELS} for batch in BATCHES}
        for repeat in range(args.repeats):
            for clients in LEVELS:
                for batch, (_, url) in servers.items():
                    runs[batch][clients].append(run_level(url, texts, clients, args, reference))
            print(f"pass {repeat + 1}/{args.repeats} done", flush=True)
        for batch, (proc, _) in servers.items():
            memory[batch].append(pss_mib(proc.pid))
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    results = {batch: {c: summary(r) for c, r in levels.items()} for batch, levels in runs.items()}
    for batch in BATCHES:
        report(batch, results[batch])
        print(f"  server memory: {memory[batch][0]:.0f} MiB once ready, {memory[batch][1]:.0f} MiB after the load")
    rates = engine_alone([f"model_dir={model_dir}", *args.server_args.split()], texts, args.repeats)
    one, many = (statistics.median(rates[b]) for b in BATCHES)
    print(f"engine alone (no HTTP, no queue), texts/s: one per call {median_range(rates[1])}, 16 per call "
          f"{median_range(rates[BATCHES[-1]])}: {many / one:.2f}x: what batching gains", flush=True)  # fmt: skip
    return verdict(results, runs)


def verdict(results: dict[int, dict[int, dict[str, Any]]], runs: dict[int, dict[int, list]]) -> int:
    """The goal line and the last line (medians, then the repeats' ranges and the machine)."""
    single, batched = results[1], results[BATCHES[-1]]
    top, base = batched[LEVELS[-1]], single[LEVELS[-1]]
    speedup = top["rps"] / base["rps"]
    lost = sum(r["wrong"] for levels in results.values() for r in levels.values())
    goal = speedup >= 2 and top["p99"] <= 4 * batched[1]["p50"] and lost == 0
    print(
        f"goal (>= 2x batch 1 at 16 clients, p99 <= 4x the 1-client p50, nothing lost): {'met' if goal else 'not met'}"
        f" ({speedup:.2f}x, p99 {top['p99']:.0f} ms vs 4 x {batched[1]['p50']:.0f} ms, {lost} wrong or lost)"
    )
    pairs = [a["rps"] / b["rps"] for a, b in zip(runs[BATCHES[-1]][LEVELS[-1]], runs[1][LEVELS[-1]], strict=True)]
    (rps_low, rps_high), (p99_low, p99_high) = top["range"]["rps"], top["range"]["p99"]
    spread = (f"{len(pairs)} repeats: req/s {rps_low:.1f}-{rps_high:.1f}, ratio {min(pairs):.2f}-{max(pairs):.2f}, "
              f"p99 {p99_low:.0f}-{p99_high:.0f} ms")  # fmt: skip
    print(f"serve: {top['rps']:.2f} req/s at 16 clients ({speedup:.2f}x batch 1), p99 {top['p99']:.0f} ms; {spread}; "
          f"{machine()}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
