"""Minimum-Bayes-risk decoding against beam search, per model and for an ensemble of two runs, on DialogSum dev.

Models: (a) the offline default model (tiny_t5) trained on DialogSum by train.py (a completed run of the same
config under outputs/train is reused, else one is trained: one epoch, about 4 minutes on 2 quiet cores; the 3-epoch
run in BENCHMARKS.md's prediction section was best at epoch 1); (b) SmolLM2-135M-Instruct fine-tuned with LoRA on
DialogSum by `make bench-real` (benchmarks/bench_real.py writes it to
outputs/bench_real/smollm2-lora-dialogsum-train<N>): of the completed runs under outputs/ whose model is
smollm2_135m_instruct with a LoRA on DialogSum, the one trained on the most dialogues (then the newest, a run with
seed 7 last), or --real-model-dir; without one, part (b) is skipped with a message; (b'): a second run of (b)'s
recipe and dialogues with seed 7 (bench_real's, trained here unless complete, about 15 minutes), or
--second-model-dir: the member of comparable quality that an ensemble needs.

Rows per model, on the first --dev dialogues of DialogSum dev after --skip (predict.py itself, in this process; each
row's output under outputs/bench_mbr/dev<N>/ or dev<K>-<K+N>/, reused when complete, resumed from its shards when a stop
cut it short): beam 4 (decoding=beam, generation=beam4); MBR (ROUGE-L utility) over the n-best of 16 and 32 beams
(decoding=mbr); MBR over 16 and 32 nucleus samples (decoding=mbr_sampling, top_p 0.9); where both exist, MBR over the
n-best and the samples of the same size pooled (2N per input: what decoding=mbr_both generates in one run, here by
decoding.select_only over those two rows, nothing generated again); --sources beam keeps the n-best rows alone. (b')
runs the n-best of the first --candidates only. Then two ensembles, (b)+(b') and (a)+(b): each member's n-best pooled
per input the same way, against the better member's same n-best row (the issue's goal: at least as good as it). Each
row: ROUGE-1/2/L F1 (x100), the difference in each to beam 4 of the same model (of the better member, for the ensemble)
with a paired bootstrap 95% CI (sumlab.core.stats), generation samples/s, MBR selection ms per input (tokenizing apart),
and how often MBR replaced the first candidate. --skip K with --models smollm2 measures (b) alone on dialogues no
earlier run looked at: the way to confirm a row that was picked among several.

    .venv/bin/python benchmarks/bench_mbr.py [--dev 200] [--candidates 16,32] [--sources beam,sampling]
    .venv/bin/python benchmarks/bench_mbr.py --skip 200 --dev 300 --models smollm2 --candidates 16   # confirm
    .venv/bin/python benchmarks/bench_mbr.py --dev 8 --candidates 4 --t5-model-dir DIR   # a quick check

The last line reads ``mbr vs beam4 (real model, <row>): ROUGE-L +<d> (95% CI <lo>..<hi>), selection <ms> ms/input at
N=32`` on model (b), ROUGE-L x100: the row is MBR over the most samples (the published setting), or over the largest
n-best with --sources beam; selection at N=32 from the first row with 32 candidates per input (a pool of 16 + 16
included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

from bench_predict import compose, default_model  # this directory is on sys.path when the script runs
from figures import machine
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM = REPO.parent / "shared" / "data" / "dialogsum"
# (a): the offline default model on DialogSum, as BENCHMARKS.md's DialogSum-trained tiny model
T5_TRAIN = ["data=dialogsum", f"data.dir={DIALOGSUM}", "model.tiny.vocab_size=4000", "data.max_source_length=384",
            "data.max_target_length=64", "data.max_eval_samples=64", "generation=greedy", "trainer.max_epochs=1",
            "test=false"]  # fmt: skip
REAL_MODEL = "smollm2_135m_instruct"
SECOND_SEED = 7  # (b'): (b)'s recipe with this seed
KEYS = ("rouge1", "rouge2", "rougeL")


def find_real_run(output_dir: Path) -> Optional[Path]:
    """The completed LoRA run of SmolLM2-135M-Instruct on DialogSum under outputs/ trained on the most dialogues."""
    found = []
    for info_file in output_dir.rglob("run.json"):
        run = info_file.parent
        try:
            status = json.loads(info_file.read_text(encoding="utf-8")).get("status")
            cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        except (OSError, ValueError, json.JSONDecodeError):
            continue
        lora = str(OmegaConf.select(cfg, "qlora.method", default="none")) != "none"
        named = (OmegaConf.select(cfg, "model.name"), OmegaConf.select(cfg, "data.name"))
        if status == "completed" and lora and (run / "export").is_dir() and named == (REAL_MODEL, "dialogsum"):
            limit = OmegaConf.select(cfg, "data.max_train_samples", default=None)  # null: every dialogue
            second = OmegaConf.select(cfg, "seed") == SECOND_SEED  # (b') itself is not (b)
            found.append((float("inf") if limit is None else limit, not second, run.stat().st_mtime, run))
    return max(found)[3] if found else None


def second_run(real: Path) -> Path:
    """(b'): bench_real's LoRA run on (b)'s train dialogues with seed 7, trained unless complete."""
    import bench_real

    limit = OmegaConf.select(OmegaConf.load(real / ".hydra" / "config.yaml"), "data.max_train_samples", default=None)
    return bench_real.finetune(bench_real.TRAIN_DEFAULT if limit is None else int(limit), 16, SECOND_SEED)


def rows_of(candidates: list[int], sources: list[str]) -> dict[str, list[str]]:
    """Row name -> predict.py overrides."""
    rows = {"beam4": ["decoding=beam", "generation=beam4"]}
    for n in candidates:
        if "beam" in sources:
            rows[f"mbr n-best {n}"] = ["decoding=mbr", f"decoding.candidates={n}"]
        if "sampling" in sources:
            rows[f"mbr sampling {n}"] = ["decoding=mbr_sampling", f"decoding.candidates={n}"]
    return rows


def predict(overrides: list[str], out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """predict.py in this process: (metrics.json, predictions.jsonl rows). An output that completed with the same
    overrides is reused, and one a stop cut short resumes from its shards (predict.py's own resume): a stopped
    benchmark goes on where it stopped."""
    from sumlab.predict import run

    stamp, pending = out / "bench_overrides.json", out / "bench_overrides.pending.json"
    done, started = (p.is_file() and json.loads(p.read_text(encoding="utf-8")) == overrides for p in (stamp, pending))
    if started and (out / "predictions.jsonl").is_file():  # stopped after predict.py finished, before the stamp
        pending.replace(stamp)
    elif not done:
        stamp.unlink(missing_ok=True)
        if not started:
            out.mkdir(parents=True, exist_ok=True)
            (out / "predictions.jsonl").unlink(missing_ok=True)  # another run's: never taken for this one's
            pending.write_text(json.dumps(overrides), encoding="utf-8")
        overwrite = f"output.overwrite={str(not started).lower()}"  # false: resume the shards of a stopped run
        metrics = run(compose([*overrides, f"output.dir={out}", f"paths.run_dir={out}", overwrite,
                               "trainer.enable_progress_bar=false"]))  # fmt: skip
        pending.replace(stamp)
        return metrics, read_rows(out)
    print(f"reusing {out}", flush=True)
    return json.loads((out / "metrics.json").read_text(encoding="utf-8")), read_rows(out)


def read_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def per_example(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each example's ROUGE-1/2/L F1 (x100) against its reference."""
    from sumlab.text.rouge import score_pair

    scores = [score_pair(r["prediction"], r["reference"]) for r in rows]
    return {k: [100 * s[k] for s in scores] for k in KEYS}


def measure(name: str, metrics: dict[str, Any], rows: list[dict[str, Any]], base: Optional[dict]) -> dict[str, Any]:
    """One table row: means, differences to `base` with paired bootstrap CIs, speed, selection cost."""
    from sumlab.core.stats import paired_bootstrap

    scores = per_example(rows)
    row = {"name": name, "scores": scores, "means": {k: sum(v) / len(v) for k, v in scores.items()},
           "samples_per_second": metrics.get("samples_per_second"), "candidates": metrics.get("candidates_per_input"),
           "selection_ms": metrics.get("selection_ms_per_input"), "tokenize_ms": metrics.get("tokenize_ms_per_input"),
           "changed": metrics.get("changed_share")}  # fmt: skip
    if base is not None:
        row["diff"] = {k: paired_bootstrap(base["scores"][k], scores[k]) for k in KEYS}
    return row


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"  {'row':26s} {'R-1':>6s} {'R-2':>6s} {'R-L':>6s} {'dR-L vs base (95% CI)':>26s} {'dR-1':>6s} {'dR-2':>6s}"
          f" {'samples/s':>9s} {'select ms':>9s} {'tok ms':>7s} {'changed':>7s}")  # fmt: skip
    for r in rows:
        m, d = r["means"], r.get("diff")
        ci = f"{d['rougeL'].difference:+.2f} ({d['rougeL'].low:+.2f}..{d['rougeL'].high:+.2f})" if d else "(base)"
        d1, d2 = (f"{d[k].difference:+.2f}" if d else "" for k in ("rouge1", "rouge2"))
        cells = [(r["samples_per_second"], ".2f", 9), (r["selection_ms"], ".3f", 9), (r["tokenize_ms"], ".3f", 7),
                 (r["changed"], ".1%", 7)]  # fmt: skip
        rest = " ".join(format("-" if v is None else format(v, spec), f">{width}") for v, spec, width in cells)
        print(f"  {r['name']:26s} {m['rouge1']:6.2f} {m['rouge2']:6.2f} {m['rougeL']:6.2f} {ci:>26s} {d1:>6s} {d2:>6s} "
              f"{rest}", flush=True)  # fmt: skip


def bench_model(label: str, model_dir: Path, common: list[str], rows: dict[str, list[str]], work: Path,
                batch_rows: int) -> tuple[list[dict[str, Any]], dict[str, Path]]:  # fmt: skip
    """`rows` on one model: (table rows, output directory per row); differences are to the first row."""
    table, outs, base = [], {}, None
    for name, overrides in rows.items():
        n = max([int(o.split("=")[1]) for o in overrides if o.startswith("decoding.candidates=")] or [4])
        outs[name] = work / f"{label}-{name.replace(' ', '_')}"
        batch = max(1, min(16, batch_rows // n))  # rows per generate call stay about the same
        metrics, rows = predict([*common, f"model_dir={model_dir}", *overrides, f"batch_size={batch}"], outs[name])
        table.append(measure(name, metrics, rows, base))
        base = base or table[0]
    return table, outs


def select_only(common: list[str], model_dirs: list[Path], sources: list[Path], out: Path) -> tuple[dict, list]:
    """MBR over the candidates earlier rows kept (decoding.select_only: nothing generated again)."""
    models, kept = ",".join(map(str, model_dirs)), ",".join(map(str, sources))
    return predict([*common, f"model_dir=[{models}]", "decoding=mbr", "decoding.select_only=true",
                    f"decoding.candidates_from=[{kept}]"], out)  # fmt: skip


def bench_pooled(label: str, model_dir: Path, common: list[str], table: list[dict[str, Any]], outs: dict[str, Path],
                 n: int, work: Path) -> Optional[dict[str, Any]]:  # fmt: skip
    """One model's n-best and samples pooled (2n candidates per input) against its beam 4: the pool is where the
    consensus of the samples can overrule the beams' shared mistakes while the beams keep the samples' noise out."""
    parts = [f"mbr n-best {n}", f"mbr sampling {n}"]
    if not all(part in outs for part in parts):
        return None
    name = f"mbr n-best {n} + sampling {n}"
    out = work / f"{label}-{name.replace(' ', '_')}"
    metrics, rows = select_only(common, [model_dir], [outs[part] for part in parts], out)
    return measure(name, metrics, rows, table[0])


def bench_ensemble(models: dict[str, Path], outs: dict[str, dict[str, Path]], tables: dict[str, list],
                   common: list[str], n: int, work: Path) -> list[dict[str, Any]]:  # fmt: skip
    """The models' n-best candidates pooled (select_only over their outputs), against the better member alone."""
    row_name = f"mbr n-best {n}"
    metrics, rows = select_only(common, list(models.values()), [outs[label][row_name] for label in models],
                                work / "+".join(models))  # fmt: skip
    members = [{**next(r for r in tables[label] if r["name"] == row_name), "name": f"{label} {row_name}", "diff": None}
               for label in models]  # fmt: skip
    best = max(members, key=lambda r: r["means"]["rougeL"])
    return [*members, measure(f"ensemble {row_name} x{len(models)}", metrics, rows, best)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev", type=int, default=200, help="first N DialogSum dev dialogues (after --skip)")
    ap.add_argument("--skip", type=int, default=0, help="leave out the first K dev dialogues: a fresh sample to "
                    "confirm on")  # fmt: skip
    ap.add_argument("--models", default="t5,smollm2,smollm2-b", help="which of (a) t5, (b) smollm2, (b') smollm2-b")
    ap.add_argument("--candidates", default="16,32", help="MBR candidates per input, comma-separated")
    ap.add_argument("--sources", default="beam,sampling", help="MBR candidate sources: beam (n-best), sampling")
    ap.add_argument("--t5-model-dir", default=None, help="(a): a DialogSum-trained run (default: trained or reused)")
    ap.add_argument("--real-model-dir", default=None, help="(b): the LoRA-fine-tuned SmolLM2 run (default: found)")
    ap.add_argument("--second-model-dir", default=None, help="(b'): a second run like (b) (default: seed 7, trained "
                    "or reused)")  # fmt: skip
    ap.add_argument("--batch-rows", type=int, default=64, help="sequences per generate call (batch_size x beams)")
    args = ap.parse_args()
    sources = args.sources.split(",")
    if not sources or set(sources) - {"beam", "sampling"}:
        print(f"error: --sources={args.sources}: use beam, sampling or both", file=sys.stderr)
        return 2
    if not (DIALOGSUM / "dev.jsonl").is_file():
        print(f"bench-mbr skipped: DialogSum is not at {DIALOGSUM} (../shared/data/dialogsum)")
        print("mbr vs beam4 (real model): skipped (no DialogSum data)")
        return 0
    candidates = [int(c) for c in args.candidates.split(",")]
    output_dir = Path(compose(["model_dir=x"]).paths.output_dir)
    span = f"dev{args.dev}" if not args.skip else f"dev{args.skip}-{args.skip + args.dev}"
    work = output_dir / "bench_mbr" / span  # each row's output, reused or resumed (see predict)
    common = ["data=dialogsum", f"data.dir={dev_slice(work, args.skip)}", "data.split=validation",
              f"data.max_predict_samples={args.dev}"]  # fmt: skip
    models = find_models(args, output_dir)
    print(f"{span}: {args.dev} DialogSum dev dialogues; models: " + ", ".join(f"{k} {v}" for k, v in models.items()) +
          f"; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    rows = rows_of(candidates, sources)
    first_nbest = f"mbr n-best {candidates[0]}"
    member = {first_nbest: rows_of(candidates[:1], ["beam"])[first_nbest]}  # what the ensembles pool
    rows_per_model = {"t5": {**rows, **member}, "smollm2": {**rows, **member}, "smollm2-b": member}
    tables, outs, ensembles = {}, {}, {}
    for label, model_dir in models.items():
        tables[label], outs[label] = bench_model(label, model_dir, common, rows_per_model[label], work,
                                                 args.batch_rows)  # fmt: skip
        pooled = (bench_pooled(label, model_dir, common, tables[label], outs[label], n, work) for n in candidates)
        tables[label] += [row for row in pooled if row is not None]
        print_table(f"{label}: {model_dir} (ROUGE F1 x100; differences to its {next(iter(rows_per_model[label]))})",
                    tables[label])  # fmt: skip
    for pair in (("smollm2", "smollm2-b"), ("t5", "smollm2")):
        if all(label in models for label in pair):
            table = bench_ensemble({label: models[label] for label in pair}, outs, tables, common, candidates[0],
                                   work)  # fmt: skip
            ensembles[pair] = table[-1]
            print_table(f"ensemble of {' + '.join(pair)} (difference to the better member's {first_nbest})", table)
    return headline(tables.get("smollm2"), ensembles.get(("smollm2", "smollm2-b")), candidates, sources)


def dev_slice(work: Path, skip: int) -> Path:
    """The DialogSum directory to read: ../shared's, or with --skip a copy of its dev dialogues from the K-th on
    (under outputs/, never in the repository)."""
    if not skip:
        return DIALOGSUM
    lines = (DIALOGSUM / "dev.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    text, copy = "".join(lines[skip:]), work / "dev.jsonl"
    if not copy.is_file() or copy.read_text(encoding="utf-8") != text:  # untouched otherwise: a resume matches it
        work.mkdir(parents=True, exist_ok=True)
        copy.write_text(text, encoding="utf-8")
    return work


def find_models(args: argparse.Namespace, output_dir: Path) -> dict[str, Path]:
    """Those of --models: (a), and (b) and (b') where there is a fine-tuned SmolLM2 run under `output_dir`:
    label -> run directory."""
    wanted, models = args.models.split(","), {}
    if "t5" in wanted:
        models["t5"] = Path(args.t5_model_dir) if args.t5_model_dir else default_model(T5_TRAIN)
    if not {"smollm2", "smollm2-b"} & set(wanted):
        return models
    real = Path(args.real_model_dir) if args.real_model_dir else find_real_run(output_dir)
    if real is None:
        print(f"part (b) skipped: no completed LoRA run of {REAL_MODEL} on DialogSum under {output_dir}: run "
              "`make bench-real` first, or pass --real-model-dir", flush=True)  # fmt: skip
        return models
    if "smollm2" in wanted:
        models["smollm2"] = real
    if "smollm2-b" in wanted:
        models["smollm2-b"] = Path(args.second_model_dir) if args.second_model_dir else second_run(real)
    return models


def headline(table: Optional[list[dict[str, Any]]], ensemble: Optional[dict[str, Any]], candidates: list[int],
             sources: list[str]) -> int:  # fmt: skip
    """The goal lines and the last line (see the module docstring)."""
    n = max(candidates)
    name = f"mbr {'sampling' if 'sampling' in sources else 'n-best'} {n}"
    row = next((r for r in table or [] if r["name"] == name), None)
    if row is None:
        print("mbr vs beam4 (real model): skipped (no fine-tuned SmolLM2 run: `make bench-real`, or --real-model-dir)")
        return 0
    at32 = [r["selection_ms"] for r in [*table, ensemble] if r is not None and r["candidates"] == 32]
    d = row["diff"]["rougeL"]
    wins = ", ".join(r["name"] for r in table[1:] if r["diff"]["rougeL"].low > 0)
    tried = f" ({len(table) - 1} MBR rows, each its own test: not adjusted for multiple comparisons)"
    print(f"goal, MBR beats beam 4 on ROUGE-L with a CI above 0 (real model): {'met by ' + wins if wins else 'not met'}"
          f"{tried}")  # fmt: skip
    if ensemble is not None:
        e = ensemble["diff"]["rougeL"]
        verdict = "met" if e.difference >= 0 else "not met"
        print(f"goal, the two-run ensemble at least as good as its better member: {verdict} "
              f"(ROUGE-L {e.difference:+.2f}, 95% CI {e.low:.2f}..{e.high:.2f})")  # fmt: skip
    selection = f"{at32[0]:.2f} ms/input at N=32" if at32 else f"{row['selection_ms']:.2f} ms/input at N={n}"
    print(f"mbr vs beam4 (real model, {name}): ROUGE-L {d.difference:+.2f} (95% CI {d.low:.2f}..{d.high:.2f}), "
          f"selection {selection}; {len(row['scores']['rougeL'])} dialogues, 1 run; {machine()}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
