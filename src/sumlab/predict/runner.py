"""One prediction run: model_dir -> length-bucketed batches -> Trainer.predict -> shards -> merged outputs.

Every rank runs this whole function (Lightning relaunches the script once per extra device). Before
``trainer.predict`` only rank 0 changes files; the other ranks start while rank 0 waits for them in the
process-group rendezvous, so everything they read before it is settled. Each rank appends to its own
shard; after a barrier rank 0 merges them by id.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from sumlab import quiet_lightning_logs
from sumlab.config import FP16_UNSAFE_HINT, ROUGE_TOKENIZERS, check_generation
from sumlab.data.sources import FILE_KEY, load_split, split_path
from sumlab.errors import SumlabError, guarded
from sumlab.family import Causal, Seq2Seq, generate_texts, make_family
from sumlab.generation import build_generation_config
from sumlab.predict import writer
from sumlab.predict.beam_cache import fast_beam_cache
from sumlab.predict.bucketing import BucketBatchSampler
from sumlab.predict.config import OUTPUT_FORMATS, digest
from sumlab.predict.loading import LoadedModel, load
from sumlab.rouge import score_corpus
from sumlab.rundir import versions, write_json

STATS = ("examples", "batches", "input_tokens", "input_padding", "generated_tokens")


class PredictModule(L.LightningModule):
    """Generates one batch per step and returns its records for the shard writer; counts tokens and padding."""

    allow_zero_length_dataloader_with_multiple_devices = True  # a rank may get no batch of a short input

    def __init__(self, loaded: LoadedModel, family: Seq2Seq | Causal, generation_config: Any, fast_cache: bool) -> None:
        super().__init__()
        self.model = loaded.model
        self.family = family
        self.generation_config = generation_config
        self.fast_cache = fast_cache and family.name == "seq2seq" and generation_config.num_beams > 1
        self.stats = dict.fromkeys(STATS, 0)
        self.seconds = 0.0

    def on_predict_start(self) -> None:
        self._started = time.perf_counter()

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        with fast_beam_cache(self.fast_cache):
            texts, lengths = generate_texts(self.family, self.model, batch, self.generation_config)
        lengths = lengths.tolist()
        mask = batch["attention_mask"] if "attention_mask" in batch else batch["prompt_mask"]
        self.stats["examples"] += len(texts)
        self.stats["batches"] += 1
        self.stats["input_tokens"] += mask.numel()
        self.stats["input_padding"] += int(mask.numel() - mask.sum())
        self.stats["generated_tokens"] += int(sum(lengths))
        records = [{"id": i, "prediction": t, "gen_len": n} for i, t, n in zip(batch["ids"], texts, lengths, strict=True)]
        return {"records": records}

    def on_predict_end(self) -> None:
        self.seconds = time.perf_counter() - self._started
        values = torch.tensor([float(self.stats[k]) for k in STATS], device=self.device)
        totals = self.trainer.strategy.reduce(values, reduce_op="sum")
        slowest = self.trainer.strategy.reduce(torch.tensor(self.seconds, device=self.device), reduce_op="max")
        self.stats = {k: int(v) for k, v in zip(STATS, totals.tolist(), strict=True)}
        self.seconds = float(slowest)


class PredictData(L.LightningDataModule):
    """The examples still to do, tokenized, in length buckets; this rank's share of the batches."""

    allow_zero_length_dataloader_with_multiple_devices = True

    def __init__(self, examples: list[dict[str, Any]], family: Seq2Seq | Causal, data_cfg: DictConfig,
                 batch_size: int, sort: bool) -> None:  # fmt: skip
        super().__init__()
        self.family = family
        self.batch_size, self.sort = batch_size, sort
        self.items = [
            (e["id"], family.features(e["text"], None, data_cfg.max_source_length, data_cfg.max_target_length))
            for e in examples
        ]
        self.num_workers = int(data_cfg.num_workers)

    def lengths(self) -> list[int]:
        return [len(f["input_ids"] if "input_ids" in f else f["prompt_ids"]) for _, f in self.items]

    def collate(self, rows: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        batch = self.family.collate([{**f, "idx": 0} for _, f in rows])
        batch.pop("idx")
        batch["ids"] = [i for i, _ in rows]
        return batch

    def predict_dataloader(self) -> DataLoader:
        sampler = BucketBatchSampler(
            self.lengths(), self.batch_size, sort=self.sort, rank=self.trainer.global_rank, world_size=self.trainer.world_size
        )
        return DataLoader(self.items, batch_sampler=sampler, collate_fn=self.collate, num_workers=self.num_workers)


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32"


def validate(cfg: DictConfig) -> None:
    if cfg.batch_size < 1:
        raise SumlabError(f"batch_size={cfg.batch_size} must be at least 1")
    if cfg.output.format not in OUTPUT_FORMATS:
        raise SumlabError(f"output.format={cfg.output.format} is unknown: use one of {list(OUTPUT_FORMATS)}")
    if cfg.data.split not in FILE_KEY:
        raise SumlabError(f"data.split={cfg.data.split} is unknown: use one of {list(FILE_KEY)}")
    check_generation(cfg.generation)
    if cfg.metrics.tokenizer is not None and cfg.metrics.tokenizer not in ROUGE_TOKENIZERS:
        raise SumlabError(f"metrics.tokenizer={cfg.metrics.tokenizer} is unknown: use one of {list(ROUGE_TOKENIZERS)}")
    if cfg.model_dir in (None, ""):
        raise SumlabError("model_dir is empty: pass model_dir=outputs/train/<run> (or an export/, a .ckpt, a hub name)")


def load_examples(cfg: DictConfig) -> list[dict[str, Any]]:
    split = cfg.data.split
    if cfg.data.source != "synthetic" and split_path(cfg.data, split) is None:
        raise SumlabError(f"data.{FILE_KEY[split]} is not set: pass data.{FILE_KEY[split]}=path/to/file.jsonl (data.split={split})")
    # predict.py has one split, so data.max_predict_samples limits whichever it is
    examples = load_split(cfg.data, split, require_summary=False, seed=cfg.seed, limit_key="max_predict_samples")
    if not examples:
        raise SumlabError(f"no examples to predict in data.split={split} of data={cfg.data.name}")
    empty = sum(1 for e in examples if not e["text"].strip())
    if empty == len(examples):
        raise SumlabError(f"every {cfg.data.text_column!r} (data.text_column) in data.split={split} is empty: nothing to summarize")
    return examples


def data_identity(cfg: DictConfig, examples: list[dict[str, Any]]) -> dict[str, Any]:
    """What makes "the same input": the texts themselves (and how they are cut), not where they were read from."""
    texts = digest([[e["id"], e["text"]] for e in examples])
    return {"name": cfg.data.name, "split": cfg.data.split, "examples": len(examples), "texts": texts,
            "max_source_length": cfg.data.max_source_length}  # fmt: skip


def build_trainer(cfg: DictConfig, precision: str, callbacks: list[Any]) -> L.Trainer:
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}
    for key in ("max_epochs", "max_steps", "min_epochs", "accumulate_grad_batches", "gradient_clip_val",
                "gradient_clip_algorithm", "val_check_interval", "check_val_every_n_epoch", "limit_train_batches",
                "limit_val_batches", "limit_test_batches", "num_sanity_val_steps", "log_every_n_steps"):  # fmt: skip
        kwargs.pop(key, None)  # training-only keys
    kwargs.update(precision=precision, use_distributed_sampler=False, logger=False)
    return L.Trainer(**kwargs, callbacks=callbacks)


@guarded
def run(cfg: DictConfig) -> dict[str, Any]:
    """Predict, merge and score; returns metrics.json's content (on rank 0; an empty dict elsewhere)."""
    validate(cfg)
    started = time.perf_counter()
    quiet_lightning_logs()
    # Our batch sampler returns every index by construction; Lightning cannot know and says so.
    warnings.filterwarnings("ignore", message=".*custom batch sampler.*")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the one-line error of a bad input
    is_zero = rank_zero_only.rank == 0
    out = Path(cfg.output.dir or cfg.paths.run_dir).expanduser()
    if is_zero:
        writer.check_writable(out)
    precision = resolve_precision(str(cfg.trainer.precision))
    examples = load_examples(cfg)
    loaded = load(str(cfg.model_dir), cfg.model, cfg.paths.cache_dir)
    if precision.startswith("16") and getattr(loaded.model.config, "model_type", "") in ("t5", "mt5", "umt5", "longt5"):
        raise SumlabError(f"trainer.precision={precision} is not safe for {loaded.model.config.model_type} models: {FP16_UNSAFE_HINT}")
    # The run's own setting when it is a real one (a redacted or damaged config falls back to the default).
    run_tokenizer = loaded.rouge_tokenizer if loaded.rouge_tokenizer in ROUGE_TOKENIZERS else None
    rouge_tokenizer = cfg.metrics.tokenizer or run_tokenizer or "default"
    family = make_family(loaded.family, loaded.tokenizer, loaded.prefix, loaded.separator, chat=loaded.chat)
    generation_config = build_generation_config(cfg.generation, loaded.model)
    generation = OmegaConf.to_container(cfg.generation, resolve=True)
    meta = {
        "model": loaded.identity,
        "data": data_identity(cfg, examples),
        "generation": {**generation, "precision": precision},
    }
    meta["fingerprint"] = digest(meta["model"], meta["data"], meta["generation"])
    writer.prepare(out, meta, bool(cfg.output.overwrite), is_zero)

    done = writer.read_shards(out)
    todo = [e for e in examples if e["id"] not in done]
    module = PredictModule(loaded, family, generation_config, bool(cfg.fast_beam_cache))
    if todo:
        if cfg.seed is not None:
            L.seed_everything(cfg.seed, verbose=False)
        data = PredictData(todo, family, cfg.data, int(cfg.batch_size), bool(cfg.sort_by_length))
        trainer = build_trainer(cfg, precision, [writer.ShardWriter(out)])
        trainer.predict(module, datamodule=data, return_predictions=False)
        trainer.strategy.barrier()  # every shard is complete before rank 0 reads them
        if not trainer.is_global_zero:
            return {}
    elif not is_zero:
        return {}

    rows = writer.merge(out, examples)
    stats, seconds = module.stats, module.seconds
    references = [r.get("reference") for r in rows]
    metrics: dict[str, Any] = {
        "model_dir": str(cfg.model_dir),
        "model": loaded.source,
        "family": loaded.family,
        "data": cfg.data.name,
        "split": cfg.data.split,
        "examples": len(rows),
        "generated_now": stats["examples"],
        "resumed": len(rows) - stats["examples"],
        "devices": int(trainer.world_size) if todo else 0,
        "precision": precision,
        "batch_size": int(cfg.batch_size),
        "sort_by_length": bool(cfg.sort_by_length),
        "fast_beam_cache": bool(module.fast_cache),
        "generation": generation,
        "samples_per_second": round(stats["examples"] / seconds, 3) if seconds else None,
        "generated_tokens_per_second": round(stats["generated_tokens"] / seconds, 1) if seconds else None,
        "mean_generated_length": round(sum(r["gen_len"] or 0 for r in rows) / len(rows), 2),
        "padding_fraction": round(stats["input_padding"] / stats["input_tokens"], 4) if stats["input_tokens"] else None,
        "predict_seconds": round(seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    if all(r is not None for r in references):
        metrics["rouge_tokenizer"] = rouge_tokenizer
        metrics["rouge"] = score_corpus([r["prediction"] for r in rows], references, rouge_tokenizer)
    metrics["versions"] = versions()
    write_json(out / writer.METRICS, metrics)
    files = writer.write_outputs(out, rows, cfg.output.format, cfg.output.id_header, cfg.output.summary_header)
    _print_summary(metrics, files)
    return metrics


def _print_summary(metrics: dict[str, Any], files: list[Path]) -> None:
    rouge = metrics.get("rouge")
    parts = [f"{metrics['examples']} examples ({metrics['resumed']} from earlier shards)"]
    if metrics["samples_per_second"]:
        parts.append(f"{metrics['samples_per_second']} samples/s, {metrics['generated_tokens_per_second']} tokens/s")
    parts.append(f"mean length {metrics['mean_generated_length']}")
    if metrics["padding_fraction"] is not None:
        parts.append(f"padding {metrics['padding_fraction']:.1%}")
    if rouge:
        parts.append("ROUGE-1/2/L/Lsum " + "/".join(f"{rouge[k]:.4f}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")))
    print("predict: " + ", ".join(parts))
    for f in files:
        print(f"wrote {f}")
    sys.stdout.flush()

