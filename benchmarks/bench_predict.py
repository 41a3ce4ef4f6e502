"""predict.py against the loop users write today: samples per second at beams 4 and greedy.

Baseline: the same model, generation settings and precision; inputs in file order, batch size 8,
each batch padded to its longest input, one ``model.generate`` per batch. sumlab: ``sumlab.predict.run``
itself (length-bucketed batches, the beam-cache speed-up, shards and merge included), in this process.
Both tokenize with the same family code, so any output difference comes from padding and batching.

    .venv/bin/python benchmarks/bench_predict.py --model-dir outputs/train/<run> [--limit 500] [--bf16] [--repeats 3]

With --repeats N the two loops alternate N times and the medians are compared (spread shown), so a
burst of load on the machine during one pass cannot decide the ratio.

The last line reads ``predict speedup vs baseline: <ratio>x`` (beams 4, fp32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dialogsum" / "test.jsonl"


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import sumlab

    sumlab.setup()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="predict", overrides=overrides)


def baseline(cfg: Any, examples: list[dict], batch_size: int, bf16: bool) -> tuple[dict[str, str], float, list[int]]:
    """File order, fixed batch size, padded to the longest: what a hand-written loop does."""
    from sumlab.family import generate_texts, make_family
    from sumlab.generation import build_generation_config
    from sumlab.predict.loading import load

    loaded = load(str(cfg.model_dir), cfg.model, cfg.paths.cache_dir)
    family = make_family(loaded.family, loaded.tokenizer, loaded.prefix, loaded.separator)
    gen = build_generation_config(cfg.generation, loaded.model)
    feats = [family.features(e["text"], None, cfg.data.max_source_length, cfg.data.max_target_length) for e in examples]
    out: dict[str, str] = {}
    lengths: list[int] = []
    started = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(examples), batch_size):
            batch = family.collate([{**f, "idx": 0} for f in feats[i : i + batch_size]])
            texts, generated = generate_texts(family, loaded.model, batch, gen)
            lengths += generated.tolist()
            for e, text in zip(examples[i : i + batch_size], texts, strict=True):
                out[e["id"]] = text
    return out, time.perf_counter() - started, lengths


def sumlab_predict(overrides: list[str], out_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
    from sumlab.predict.runner import run
    from sumlab.predict.writer import read_predictions

    cfg = compose([*overrides, f"output.dir={out_dir}", f"paths.run_dir={out_dir}", "output.overwrite=true",
                   "trainer.enable_progress_bar=false"])  # fmt: skip
    metrics = run(cfg)
    return {r["id"]: r["prediction"] for r in read_predictions(out_dir)}, metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="a JSONL/CSV/Parquet file with dialogue, summary, id")
    ap.add_argument("--limit", type=int, default=None, help="first N examples only")
    ap.add_argument("--batch-size", type=int, default=16, help="sumlab's batch size (the baseline always uses 8)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--bf16", action="store_true", help="also measure both in bf16 autocast")
    ap.add_argument("--modes", default="beam4,greedy")
    ap.add_argument("--repeats", type=int, default=1, help="alternate baseline and sumlab N times, compare medians")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra override for both loops, e.g. generation.no_repeat_ngram_size=3 (repeatable)")  # fmt: skip
    args = ap.parse_args()
    if not Path(args.data).is_file():
        print(f"error: benchmark data not found: {args.data} (pass --data)", file=sys.stderr)
        return 2
    from sumlab.data.sources import load_split
    from sumlab.rouge import score_corpus

    common = [f"model_dir={args.model_dir}", "data=files", f"data.test_file={Path(args.data).resolve()}",
              f"generation.max_new_tokens={args.max_new_tokens}", *args.set]  # fmt: skip
    if args.limit:
        common.append(f"data.max_predict_samples={args.limit}")
    examples = load_split(compose(common).data, "test", require_summary=False)
    refs = [e["summary"] for e in examples]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(examples)} examples from {args.data}")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            for bf16 in [False, True] if args.bf16 else [False]:
                group = "beam4" if mode == "beam4" else "greedy"
                prec = "bf16-mixed" if bf16 else "32"
                overrides = [*common, f"generation={group}", f"trainer.precision={prec}"]
                cfg = compose(overrides)
                base_runs, our_runs = [], []
                for _ in range(args.repeats):
                    base_out, base_s, lengths = baseline(cfg, examples, 8, bf16)
                    ours, metrics = sumlab_predict(
                        [*overrides, f"batch_size={args.batch_size}"], Path(tmp) / f"{mode}-{prec}"
                    )
                    base_runs.append(len(examples) / base_s)
                    our_runs.append(metrics["samples_per_second"])
                key = f"{mode} {'bf16' if bf16 else 'fp32'}"
                base_sps, our_sps = statistics.median(base_runs), statistics.median(our_runs)
                changed = sum(base_out[e["id"]] != ours[e["id"]] for e in examples)
                limit_hits = sum(n >= args.max_new_tokens for n in lengths)
                results[key] = {
                    "baseline_sps": base_sps, "sumlab_sps": our_sps, "speedup": our_sps / base_sps, "changed": changed,
                    "baseline_runs": base_runs, "sumlab_runs": our_runs,
                    "padding_sumlab": metrics["padding_fraction"],
                    "rouge_baseline": score_corpus([base_out[e["id"]] for e in examples], refs)["rouge_combined"] if all(refs) else None,
                    "rouge_sumlab": (metrics.get("rouge") or {}).get("rouge_combined"),
                    "gen_len_mean": statistics.mean(lengths), "gen_len_stdev": statistics.pstdev(lengths),
                    "at_length_limit": limit_hits,
                }  # fmt: skip
                r = results[key]
                spread = (f" (runs {min(base_runs):.2f}-{max(base_runs):.2f} / {min(our_runs):.2f}-{max(our_runs):.2f})"
                          if args.repeats > 1 else "")  # fmt: skip
                print(f"{key:12s} baseline {r['baseline_sps']:.2f}/s  sumlab {r['sumlab_sps']:.2f}/s{spread}  "
                      f"x{r['speedup']:.2f}  outputs differing: {changed}/{len(examples)}  "
                      f"gen len {r['gen_len_mean']:.1f}+-{r['gen_len_stdev']:.1f} ({limit_hits} at the limit)  "
                      f"ROUGE-comb base {r['rouge_baseline']:.4f} sumlab {r['rouge_sumlab']:.4f}  "
                      f"padding {r['padding_sumlab']:.1%}", flush=True)  # fmt: skip
    if "beam4 fp32" in results:
        print(f"predict speedup vs baseline: {results['beam4 fp32']['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
