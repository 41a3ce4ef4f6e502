"""Training throughput: sumlab's train.py against transformers' Seq2SeqTrainer, each row a whole run in a fresh process.

Both sides get the same model (built from the model preset, same initial weights; the HF rows with torch's
own dropout, as transformers builds it), tokenizer, data
(DialogSum from ../shared/data: the first --train training and --val dev dialogues), features (sumlab's
seq2seq tokenization, read from the same tokenized cache, built before any row runs), AdamW (lr, weight
decay 0.01, no decay on biases and norms, linear schedule, no warm-up, clip 1.0), batch size, epochs, fp32,
and generation-based validation with beams 4 after every epoch (``predict_with_generate`` on the HF side);
ROUGE is sumlab's scorer on both.

Rows: HF defaults, HF ``train_sampling_strategy="group_by_length"`` (transformers 5's length grouping),
sumlab defaults (length-grouped batches, fast CPU dropout, sorted validation batches, beam-cache fix),
sumlab with torch's dropout (``model.fast_dropout=false``: what the dropout alone is worth), sumlab
``data.max_tokens`` (token-budget batches of about the same mean size).

What is timed, the same span on both sides:
- wall: the whole run in a fresh process, from starting the interpreter to its exit, measured by this script
  around the child process: imports, config, data (from the warm cache), model, training, validation, and
  what each side writes by default. sumlab rows are ``python train.py ...`` as users run it (they write the
  best and last checkpoints and metrics.json; ``export=false test=false``); HF rows are a script of
  Seq2SeqTrainer at its defaults (``save_strategy="no"``: at its default of every 500 steps a run this short
  saves nothing either).
- training tokens/s: real (non-padding) source + target tokens over the training loop's time without the
  validations (sumlab: ``train_seconds`` of metrics.json minus the validation loops; HF: ``train_runtime``
  minus ``eval_runtime``); validation samples/s over the validation loops.

Every row runs ``--repeats`` times (default 3), the row order rotating on each repeat (this VM's speed drifts
by 10-20% within minutes); medians with min-max ranges are reported.

    .venv/bin/python benchmarks/bench_train.py [--model small_t5] [--train 512] [--val 32] [--epochs 1] [--repeats 3]

The last line reads ``train speedup vs HF Seq2SeqTrainer: <ratio>x (...); <machine>`` (sumlab defaults / HF
defaults, training tokens/s).

Sections (``--sections seq2seq,llm``, default both; the llm rows run first, so the last line stays the
seq2seq ratio): ``seq2seq`` is the comparison above; ``llm`` is tiny_llama's training tokens/s with and
without ``data.packing`` (bench_packing.py, options ``--packing-examples/-batch-size/-repeats``), whose
last line reads ``packing speedup vs length-grouped batches: <ratio>x (...)``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_packing  # this directory is on sys.path when the script runs
import lightning.pytorch as L
import torch
from figures import machine, median_range, ratio

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "dialogsum"


class ValTimer(L.Callback):
    """sumlab side (``+callbacks.val_timer``): seconds and samples of the validation loops, written to ``path``
    after each one, so training time can exclude them as on the HF side."""

    def __init__(self, path: str) -> None:
        self.path, self.seconds, self.samples = Path(path), 0.0, 0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds += time.perf_counter() - self._t
        self.samples += int(pl_module.val_history[-1]["num_examples"]) if pl_module.val_history else 0
        self.path.write_text(json.dumps({"seconds": self.seconds, "samples": self.samples}))


def compose(overrides: list[str], run_dir: Path) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import sumlab

    sumlab.setup()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
    return cfg


def timed(command: list[str], log: Path, env: dict[str, str]) -> float:
    """Wall seconds of a fresh process running ``command`` to its exit (its output to ``log``)."""
    with open(log, "w") as out:
        started = time.perf_counter()
        code = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
        wall = time.perf_counter() - started
    if code != 0:
        sys.exit(f"error: {' '.join(command[:3])} ... failed (exit {code}); its output: {log}")
    return wall


def sumlab_row(overrides: list[str], out: Path, name: str) -> dict[str, float]:
    """``python train.py <overrides>`` in a fresh process, as users run it."""
    run_dir, timer = out / name, out / f"{name}.val.json"
    command = [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}",
               "+callbacks.val_timer._target_=bench_train.ValTimer", f"+callbacks.val_timer.path={timer}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    wall = timed(command, out / f"{name}.log", env)
    metrics, val = json.loads((run_dir / "metrics.json").read_text()), json.loads(timer.read_text())
    # train_seconds spans the whole fit, validations included
    return {"train_tok_s": metrics["train_tokens"] / (metrics["train_seconds"] - val["seconds"]),
            "val_samples_s": val["samples"] / val["seconds"], "wall_s": wall,
            "rouge": metrics["validation"]["rouge_combined"]}  # fmt: skip


def hf_process(args: argparse.Namespace, out: Path, name: str, group_by_length: bool) -> dict[str, float]:
    """This script's HF row (``--hf-row``) in a fresh process; its figures come back as its last line."""
    command = [sys.executable, __file__, "--hf-row", "grouped" if group_by_length else "defaults",
               "--out", str(out / name), *passed_arguments(args)]  # fmt: skip
    wall = timed(command, out / f"{name}.log", dict(os.environ))
    result = json.loads((out / f"{name}.log").read_text().strip().splitlines()[-1])
    return {**result, "wall_s": wall}


def hf_row(cfg: Any, group_by_length: bool, out: Path, name: str) -> dict[str, float]:
    """Seq2SeqTrainer at its defaults except what must match: batch size, LR, epochs, eval with beams 4."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    from sumlab.family import decode
    from sumlab.text.rouge import score_pair
    from sumlab.train.runner import build_module, load_splits

    L.seed_everything(cfg.seed)
    splits = load_splits(cfg)
    module, datamodule, _ = build_module(cfg, splits)
    datamodule.prepare_data()  # the same tokenized rows sumlab trains on, from its cache
    features = {
        s: datamodule.tokenized(s).select_columns(["input_ids", "labels"]).to_list() for s in ("train", "validation")
    }
    references = datamodule.tokenized("validation")["summary"]
    tokens = sum(len(f["input_ids"]) + len(f["labels"]) for f in features["train"]) * cfg.trainer.max_epochs
    gen = module.generation_config

    def compute_metrics(pred: Any) -> dict[str, float]:
        ids = pred.predictions
        ids[ids < 0] = module.tokenizer.pad_token_id
        texts = decode(module.tokenizer, torch.as_tensor(ids))
        scores = [score_pair(p, r, cfg.metrics.tokenizer) for p, r in zip(texts, references, strict=True)]
        combined = [(s["rouge1"] + s["rouge2"] + s["rougeL"]) / 3 for s in scores]
        return {"rouge_combined": sum(combined) / len(combined)}

    evals: list[dict[str, float]] = []

    class KeepEvals(TrainerCallback):
        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any) -> None:
            evals.append(dict(metrics or {}))

    args = Seq2SeqTrainingArguments(
        output_dir=str(out / name), per_device_train_batch_size=cfg.data.batch_size,
        per_device_eval_batch_size=cfg.data.eval_batch_size, learning_rate=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay, lr_scheduler_type=cfg.optim.scheduler,
        num_train_epochs=cfg.trainer.max_epochs, eval_strategy="epoch", save_strategy="no", report_to=[],
        predict_with_generate=True,
        generation_config=gen, train_sampling_strategy="group_by_length" if group_by_length else "random",
        seed=cfg.seed, use_cpu=not torch.cuda.is_available(), logging_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = Seq2SeqTrainer(
        model=module.model, args=args, train_dataset=features["train"], eval_dataset=features["validation"],
        data_collator=DataCollatorForSeq2Seq(module.tokenizer, label_pad_token_id=-100),
        compute_metrics=compute_metrics, callbacks=[KeepEvals()],
    )  # fmt: skip
    result = trainer.train()
    eval_s = sum(e["eval_runtime"] for e in evals)
    return {"train_tok_s": tokens / (result.metrics["train_runtime"] - eval_s),
            "val_samples_s": len(references) * len(evals) / eval_s,
            "rouge": evals[-1]["eval_rouge_combined"]}  # fmt: skip


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_t5", help="model preset (built from config)")
    parser.add_argument("--train", type=int, default=512, help="DialogSum training dialogues")
    parser.add_argument(
        "--val", type=int, default=32, help="DialogSum dev dialogues (beams 4; 128 take about an hour on 2 cores)"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every row (order rotating); medians, ranges")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="sumlab token budget (default: batch size x mean padded length)"
    )
    parser.add_argument("--sections", default="seq2seq,llm", help="comma-separated: seq2seq (vs HF), llm (packing)")
    parser.add_argument("--hf-row", choices=("defaults", "grouped"), help=argparse.SUPPRESS)  # a child process's row
    parser.add_argument("--out", help=argparse.SUPPRESS)
    bench_packing.add_arguments(parser, prefix="packing-")
    return parser


def passed_arguments(args: argparse.Namespace) -> list[str]:
    """The options that define a seq2seq row, for the child processes."""
    return [f"--model={args.model}", f"--train={args.train}", f"--val={args.val}", f"--epochs={args.epochs}",
            f"--batch-size={args.batch_size}"]  # fmt: skip


def common_overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"model={args.model}", "data=dialogsum", f"paths.data_dir={DATA.parent}",
        f"data.max_train_samples={args.train}", f"data.max_eval_samples={args.val}",
        f"data.batch_size={args.batch_size}", "data.eval_batch_size=16",
        f"trainer.max_epochs={args.epochs}", "generation=beam4", "test=false", "export=false", "optim.warmup_ratio=0",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv",
        "~callbacks.early_stopping", "trainer.precision=32",
    ]  # fmt: skip


def seq2seq(args: argparse.Namespace) -> None:
    """The five rows, each a fresh process per repeat; prints the table and the figure lines."""
    from sumlab.train.runner import build_module, load_splits

    out = Path(tempfile.mkdtemp(prefix="bench_train_"))
    os.environ.setdefault("SUMLAB_OUTPUT_DIR", str(out))
    common = common_overrides(args)
    cfg = compose([*common, "model.fast_dropout=false"], out / "hf_cfg")  # the stock model: torch's dropout
    _, datamodule, _ = build_module(cfg, load_splits(cfg))
    datamodule.prepare_data()  # before any row: the tokenized cache (and tiny tokenizer) every row reads warm
    # the same mean examples per batch as batch_size, on length-sorted batches
    max_tokens = args.max_tokens or int(args.batch_size * datamodule.padded_lengths("train").sum(1).mean())
    variants = {  # row name -> one run of the row, given its output directory's name
        "HF Seq2SeqTrainer defaults": lambda d: hf_process(args, out, d, False),
        "HF Seq2SeqTrainer train_sampling_strategy=group_by_length": lambda d: hf_process(args, out, d, True),
        "sumlab defaults": lambda d: sumlab_row(common, out, d),
        "sumlab model.fast_dropout=false": lambda d: sumlab_row([*common, "model.fast_dropout=false"], out, d),
        f"sumlab data.max_tokens={max_tokens}": lambda d: sumlab_row(
            [*common, f"data.max_tokens={max_tokens}"], out, d
        ),
    }
    names = list(variants)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repeat in range(args.repeats):  # a slow spell of this VM hits every row alike; no row always goes first
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            print(f"repeat {repeat + 1}/{args.repeats}: {name}", flush=True)
            runs[name].append(variants[name](f"row{names.index(name)}_{repeat}"))
    print(f"\nmodel {args.model}, {args.train} train / {args.val} dev DialogSum dialogues, batch {args.batch_size}, "
          f"{args.epochs} epoch(s), fp32, validation beams 4; torch {torch.__version__}; {machine()}")  # fmt: skip
    print(f"every row a whole run in a fresh process, {args.repeats} time(s), order rotating: median (min-max)")
    print("| row | train tokens/s | val samples/s | wall s (whole process) | val rouge_combined |")
    print("|---|---:|---:|---:|---:|")
    column = {name: {k: [r[k] for r in rs] for k in rs[0]} for name, rs in runs.items()}
    for name, c in column.items():
        print(f"| {name} | {median_range(c['train_tok_s'], 0)} | {median_range(c['val_samples_s'])} | "
              f"{median_range(c['wall_s'], 1)} | {statistics.median(c['rouge']):.4f} |")  # fmt: skip
    hf, ours = column[names[0]], column["sumlab defaults"]
    best = max(names[:2], key=lambda n: statistics.median(column[n]["train_tok_s"]))
    print(f"sumlab defaults vs HF best row ({best}), training tokens/s: "
          f"{ratio(ours['train_tok_s'], column[best]['train_tok_s'])}")  # fmt: skip
    # wall: HF's seconds over sumlab's, so above 1 means sumlab's whole run is faster
    print(f"end to end (whole process) vs HF defaults: {ratio(hf['wall_s'], ours['wall_s'])}")
    print(f"train speedup vs HF Seq2SeqTrainer: {ratio(ours['train_tok_s'], hf['train_tok_s'])}; {machine()}")


def main() -> None:
    args = arguments().parse_args()
    if args.hf_row:  # a child process: one HF row, its figures as the last line
        out = Path(args.out)
        cfg = compose([*common_overrides(args), "model.fast_dropout=false"], out)
        print(json.dumps(hf_row(cfg, args.hf_row == "grouped", out.parent, out.name)), flush=True)
        return
    sections = set(args.sections.split(","))
    if not sections or sections - {"seq2seq", "llm"}:
        sys.exit(f"error: --sections={args.sections} is unknown: use seq2seq, llm or seq2seq,llm")
    if "llm" in sections:
        print("## llm: tiny_llama training with and without data.packing", flush=True)
        bench_packing.run(args)
    if "seq2seq" in sections:
        if not (DATA / "train.jsonl").is_file():
            sys.exit(f"error: DialogSum not found at {DATA} (train.jsonl, dev.jsonl)")
        seq2seq(args)


if __name__ == "__main__":
    main()
