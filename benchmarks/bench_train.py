"""Training throughput: sumlab's train.py against transformers' Seq2SeqTrainer, one process, back to back.

Both sides get the same model (built from the model preset, same initial weights; the HF rows with torch's
own dropout, as transformers builds it), tokenizer, data
(DialogSum from ../shared/data: the first --train training and --val dev dialogues), features (sumlab's
seq2seq tokenization), AdamW (lr, weight decay 0.01, no decay on biases and norms, linear schedule,
no warm-up, clip 1.0), batch size, epochs, fp32, and generation-based validation with beams 4
after every epoch (``predict_with_generate`` on the HF side); ROUGE is sumlab's scorer on both.

Rows: HF defaults, HF ``train_sampling_strategy="group_by_length"`` (transformers 5's length grouping),
sumlab defaults (length-grouped batches, fast CPU dropout, sorted validation batches, beam-cache fix),
sumlab with torch's dropout (``model.fast_dropout=false``: what the dropout alone is worth), sumlab
``data.max_tokens`` (token-budget batches of about the same mean size).
Training tokens/s counts real (non-padding) source + target tokens over the training time without the
validations; validation samples/s is over the validations; wall is the whole row (model copy, loaders,
fit, validation).

    .venv/bin/python benchmarks/bench_train.py [--model small_t5] [--train 512] [--val 32] [--epochs 1] [--repeats 1]

The last line reads ``train speedup vs HF Seq2SeqTrainer: <ratio>x`` (sumlab defaults / HF defaults,
training tokens/s).

Sections (``--sections seq2seq,llm``, default both; the llm rows run first, so the last line stays the
seq2seq ratio): ``seq2seq`` is the comparison above; ``llm`` is tiny_llama's training tokens/s with and
without ``data.packing`` (bench_packing.py, options ``--packing-examples/-batch-size/-repeats``), whose
last line reads ``packing speedup vs unpacked: <ratio>x``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_packing  # this directory is on sys.path when the script runs
import lightning.pytorch as L
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "dialogsum"


class ValTimer(L.Callback):
    """sumlab side: seconds spent in validation, so training time excludes it as on the HF side."""

    seconds = 0.0
    samples = 0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ValTimer.seconds += time.perf_counter() - self._t
        ValTimer.samples += int(pl_module.val_history[-1]["num_examples"]) if pl_module.val_history else 0


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


def sumlab_row(overrides: list[str], out: Path, name: str) -> dict[str, float]:
    import json

    from bench_train import ValTimer  # the class Hydra instantiates (this file also runs as __main__)

    from sumlab.train import run

    ValTimer.seconds, ValTimer.samples = 0.0, 0
    cfg = compose([*overrides, "+callbacks.val_timer._target_=bench_train.ValTimer"], out / name)
    started = time.perf_counter()
    run(cfg)
    wall = time.perf_counter() - started
    metrics = json.loads((out / name / "metrics.json").read_text())
    # module.train_seconds spans the whole fit, validations included
    train_s = metrics["train_seconds"] - ValTimer.seconds
    return {"train_tok_s": metrics["train_tokens"] / train_s, "val_samples_s": ValTimer.samples / ValTimer.seconds,
            "wall_s": wall, "rouge": metrics["validation"]["rouge_combined"]}  # fmt: skip


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
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    eval_s = sum(e["eval_runtime"] for e in evals)
    return {"train_tok_s": tokens / (result.metrics["train_runtime"] - eval_s),
            "val_samples_s": len(references) * len(evals) / eval_s, "wall_s": wall,
            "rouge": evals[-1]["eval_rouge_combined"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_t5", help="model preset (built from config)")
    parser.add_argument("--train", type=int, default=512, help="DialogSum training dialogues")
    parser.add_argument(
        "--val",
        type=int,
        default=32,
        help="DialogSum dev dialogues (validated with beams 4; 128 takes about an hour on 2 cores)",
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="run every row N times, alternating; report medians")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="sumlab token budget (default: batch size x mean padded length)"
    )
    parser.add_argument("--sections", default="seq2seq,llm", help="comma-separated: seq2seq (vs HF), llm (packing)")
    bench_packing.add_arguments(parser, prefix="packing-")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if not sections or sections - {"seq2seq", "llm"}:
        sys.exit(f"error: --sections={args.sections} is unknown: use seq2seq, llm or seq2seq,llm")
    if "llm" in sections:
        print("## llm: tiny_llama training with and without data.packing", flush=True)
        bench_packing.run(args)
    if "seq2seq" not in sections:
        return
    if not (DATA / "train.jsonl").is_file():
        sys.exit(f"error: DialogSum not found at {DATA} (train.jsonl, dev.jsonl)")
    sys.path.insert(0, str(Path(__file__).parent))  # ValTimer as bench_train.ValTimer for Hydra's instantiate
    out = Path(tempfile.mkdtemp(prefix="bench_train_"))
    os.environ.setdefault("SUMLAB_OUTPUT_DIR", str(out))
    common = [
        f"model={args.model}", "data=dialogsum", f"paths.data_dir={DATA.parent}",
        f"data.max_train_samples={args.train}", f"data.max_eval_samples={args.val}",
        f"data.batch_size={args.batch_size}", "data.eval_batch_size=16",
        f"trainer.max_epochs={args.epochs}", "generation=beam4", "test=false", "export=false", "optim.warmup_ratio=0",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv",
        "~callbacks.early_stopping", "trainer.precision=32",
    ]  # fmt: skip
    cfg = compose([*common, "model.fast_dropout=false"], out / "hf_cfg")  # the stock model: torch's dropout
    max_tokens = args.max_tokens
    if max_tokens is None:  # the same mean examples per batch as batch_size, on length-sorted batches
        from sumlab.train.runner import build_module, load_splits

        _, datamodule, _ = build_module(cfg, load_splits(cfg))
        lengths = datamodule.padded_lengths("train")
        max_tokens = int(args.batch_size * lengths.sum(1).mean())

    variants = {  # row name -> one run of the row, given its output directory's name
        "HF Seq2SeqTrainer defaults": lambda d: hf_row(copy.deepcopy(cfg), False, out, d),
        "HF Seq2SeqTrainer train_sampling_strategy=group_by_length": lambda d: hf_row(copy.deepcopy(cfg), True, out, d),
        "sumlab defaults": lambda d: sumlab_row(common, out, d),
        "sumlab model.fast_dropout=false": lambda d: sumlab_row([*common, "model.fast_dropout=false"], out, d),
        f"sumlab data.max_tokens={max_tokens}": lambda d: sumlab_row(
            [*common, f"data.max_tokens={max_tokens}"], out, d
        ),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for repeat in range(args.repeats):  # rows alternate, so a slow spell of this VM hits every row alike
        for i, (name, run_once) in enumerate(variants.items()):
            runs[name].append(run_once(f"row{i}_{repeat}"))
    rows = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    print(f"\nmodel {args.model}, {args.train} train / {args.val} dev DialogSum dialogues, batch {args.batch_size}, "
          f"{args.epochs} epoch(s), fp32, validation beams 4; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, cuda={torch.cuda.is_available()}")  # fmt: skip
    print(f"median of {args.repeats} run(s) per row (range of training tokens/s in brackets)")
    print("| row | train tokens/s | val samples/s | wall s | val rouge_combined |\n|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        speeds = [x["train_tok_s"] for x in runs[name]]
        spread = f" ({min(speeds):.0f}-{max(speeds):.0f})" if len(speeds) > 1 else ""
        print(
            f"| {name} | {r['train_tok_s']:.0f}{spread} | {r['val_samples_s']:.2f} | {r['wall_s']:.1f} | "
            f"{r['rouge']:.4f} |"
        )
    hf, hf_best = rows["HF Seq2SeqTrainer defaults"], max(list(rows.values())[:2], key=lambda r: r["train_tok_s"])
    ours = rows["sumlab defaults"]
    print(f"sumlab defaults vs HF best row (training tokens/s): {ours['train_tok_s'] / hf_best['train_tok_s']:.2f}x; "
          f"end to end vs HF defaults: {hf['wall_s'] / ours['wall_s']:.2f}x")  # fmt: skip
    print(f"train speedup vs HF Seq2SeqTrainer: {ours['train_tok_s'] / hf['train_tok_s']:.2f}x")


if __name__ == "__main__":
    main()
