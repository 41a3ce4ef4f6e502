"""Data preparation: today's pandas + Python-list path vs the datasets cache (`make bench-data`).

A CNN/DailyMail-sized corpus is built on the fly in a temporary directory (nothing in the repo): DialogSum
train dialogues from ../shared/data concatenated to about 700 words per row (summaries concatenated too),
50,000 rows by default. One tokenizer (a BPE trained on a sample, as the offline default trains its own) and
the cnn_dailymail preset's lengths (1024 source, 142 target tokens) serve both paths.

Each measurement runs in a fresh subprocess: wall seconds from reading the file to a training split ready
for the DataLoader, and the private memory (RssAnon from /proc/self/status) that split adds, per token kept.

- baseline: the previous sources.load_split + datamodule encoding, copied below (read with pandas, rows
  as Python dicts, tokenized example by example); it has no cache, so its warm run would be another cold
  one: measured once and reported as both.
- new: sources.load_raw + the tokenized cache (Dataset.map, memory-mapped Arrow), cold (empty cache),
  warm (cache present) and cold with data.preprocessing_num_workers=2.

The warm measurement (a fresh process on the built cache, what every rank and trial runs) is cheap and
repeated ``--repeats`` times (default 3: median and min-max); each cold build runs once (minutes each).

    python benchmarks/bench_data.py                  # 50,000 rows
    python benchmarks/bench_data.py --rows 5000      # a quick run
Last line: `data: <B> private bytes/token, warm/cold <R> (...); <machine>` (B: a warm process).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import machine, median_range  # this directory is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum" / "train.jsonl"
MAX_SOURCE, MAX_TARGET = 1024, 142  # conf/data/cnn_dailymail.yaml


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def cpu_seconds() -> float:
    """User + system time of this process and its finished children (map workers): robust to a busy machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def build_corpus(path: Path, rows: int, words: int = 700) -> None:
    """Rows of consecutive DialogSum dialogues (shuffled order, so rows differ) of about `words` words."""
    source = [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            parts, summaries, n = [], [], 0
            while n < words:
                row = source[rng.randrange(len(source))]
                parts.append(row["dialogue"])
                summaries.append(row["summary"])
                n += len(row["dialogue"].split())
            summary = " ".join(summaries[:3])  # highlights: a few sentences
            f.write(json.dumps({"id": f"doc{i}", "article": "\n".join(parts), "highlights": summary}) + "\n")


def data_cfg(corpus: Path, workers: int | None):
    from omegaconf import OmegaConf

    from sumlab.config.schema import DataConfig

    return OmegaConf.merge(OmegaConf.structured(DataConfig), {
        "name": "bench", "dir": str(corpus.parent), "train_file": corpus.name, "text_column": "article",
        "summary_column": "highlights", "max_source_length": MAX_SOURCE, "max_target_length": MAX_TARGET,
        "preprocessing_num_workers": workers,
    })  # fmt: skip


# --- today's path (before the datasets rebuild), kept only as the baseline ------------------------------


def baseline_load_split(path: Path, text_column: str, summary_column: str) -> list[dict]:
    import pandas as pd

    text = path.read_text(encoding="utf-8-sig")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    frame = pd.DataFrame(rows)
    ids = frame["id"]
    texts = frame[text_column].fillna("").astype(str)
    summaries = frame[summary_column].fillna("").astype(str)
    return [{"id": str(i), "text": t, "summary": s} for i, t, s in zip(ids, texts, summaries, strict=True)]


def baseline_encoded(family, examples: list[dict]) -> list[tuple[dict, str]]:
    return [
        ({"idx": i, **family.features(e["text"], e["summary"], MAX_SOURCE, MAX_TARGET)}, e["summary"])
        for i, e in enumerate(examples)
    ]


# --- one measurement, in its own process -------------------------------------------------------------


def measure(path: str, corpus: Path, tokenizer_dir: Path, cache: Path, workers: int | None) -> dict:
    from transformers import AutoTokenizer

    from sumlab.family import make_family

    family = make_family("seq2seq", AutoTokenizer.from_pretrained(tokenizer_dir), "", "")
    import datasets  # noqa: F401  (imports before the baseline memory reading, for both paths)
    import pandas  # noqa: F401

    from sumlab.data.datamodule import SummarizationDataModule
    from sumlab.data.sources import load_raw

    family.features("warm up", "the tokenizer", 8, 8)
    cfg = data_cfg(corpus, workers)  # (imports the config schema before the first reading)
    before, started, cpu = rss_anon(), time.perf_counter(), cpu_seconds()
    if path == "baseline":
        examples = baseline_load_split(corpus, "article", "highlights")  # its data module kept both
        data = baseline_encoded(family, examples)
        tokens = sum(len(f["input_ids"]) + len(f["labels"]) for f, _ in data)
    else:
        dm = SummarizationDataModule(cfg, family, {"train": load_raw(cfg, "train", cache_dir=str(cache))}, str(cache))
        dm.prepare_data()
        dm.setup("fit")
        tokens = int(dm.lengths("train").sum())
        data = dm.tokenized("train")
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    added = rss_anon() - before
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "private_bytes": added,
        "tokens": tokens,
        "bytes_per_token": round(added / tokens, 2),
    }


def run_measure(args: argparse.Namespace, path: str, cache: Path, workers: int | None) -> dict:
    cmd = [sys.executable, __file__, "--measure", path, "--corpus", str(args.corpus), "--tokenizer-dir",
           str(args.tokenizer_dir), "--cache", str(cache), "--workers", str(workers or 0)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"measurement {path} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {path:8s} workers={workers or 1}: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="corpus rows (CNN/DailyMail train has 287k)")
    parser.add_argument("--repeats", type=int, default=3, help="warm measurements (fresh processes)")
    parser.add_argument("--measure", choices=("baseline", "new"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.corpus, args.tokenizer_dir, args.cache, args.workers or None)))
        return
    if not DIALOGSUM.exists():
        sys.exit(f"bench-data needs DialogSum at {DIALOGSUM} (../shared/data); it builds its corpus from it")
    with tempfile.TemporaryDirectory(prefix="sumlab-bench-data-") as tmp:
        tmp = Path(tmp)
        args.corpus, args.tokenizer_dir = tmp / "corpus.jsonl", tmp / "tokenizer"
        started = time.perf_counter()
        build_corpus(args.corpus, args.rows)
        from sumlab.models import add_tags, find_tags, train_tiny_tokenizer

        sample = [json.loads(line)["article"] for line in io.StringIO(args.corpus.read_text()).readlines()[:500]]
        tokenizer = train_tiny_tokenizer("t5", 8000, sample)
        add_tags(None, tokenizer, find_tags(sample, r"#[A-Za-z][A-Za-z0-9_]*#"))
        tokenizer.save_pretrained(args.tokenizer_dir)
        size = args.corpus.stat().st_size
        print(
            f"corpus: {args.rows} rows, {size / 2**20:.0f} MiB JSONL, built in {time.perf_counter() - started:.0f} s; "
            f"{machine()}",
            flush=True,
        )
        base = run_measure(args, "baseline", tmp / "unused", None)
        cold = run_measure(args, "new", tmp / "cache1", None)
        warms = [run_measure(args, "new", tmp / "cache1", None) for _ in range(args.repeats)]
        cold2 = run_measure(args, "new", tmp / "cache2", 2)
    print(f"tokens kept: baseline {base['tokens']}, new {cold['tokens']}")
    print("| path | cold s (CPU s) | warm s: median (min-max) | private bytes/token: cold process | warm process |")
    print("|---|---|---|---|---|")
    print(
        f"| baseline (pandas + lists) | {base['seconds']} ({base['cpu_seconds']}) | no cache: = cold | "
        f"{base['bytes_per_token']} | = cold |"
    )
    warm_s, warm_bytes = [w["seconds"] for w in warms], [w["bytes_per_token"] for w in warms]
    print(
        f"| datasets cache, 1 process | {cold['seconds']} ({cold['cpu_seconds']}) | {median_range(warm_s)} | "
        f"{cold['bytes_per_token']} | {median_range(warm_bytes)} |"
    )
    print(
        f"| datasets cache, preprocessing_num_workers=2 | {cold2['seconds']} ({cold2['cpu_seconds']}) | - | "
        f"{cold2['bytes_per_token']} | - |"
    )
    print(
        f"new/baseline cold wall: {cold['seconds'] / base['seconds']:.2f}x (1 process), "
        f"{cold2['seconds'] / base['seconds']:.2f}x (2 workers); cold builds: 1 run each, no spread"
    )
    print(f"data: {median_range(warm_bytes)} private bytes/token in a warm process ({len(warms)} runs), warm/cold "
          f"{median_range([w / cold['seconds'] for w in warm_s], 3)} (cold: 1 run); {machine()}")  # fmt: skip


if __name__ == "__main__":
    main()
