"""One prediction run: model_dir -> tokenized cache -> length-bucketed batches -> Trainer.predict -> shards -> merged outputs.

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
from typing import Any, Optional

import datasets
import lightning.pytorch as L
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from sumlab import quiet_lightning_logs
from sumlab.config import FP16_UNSAFE_HINT, ROUGE_TOKENIZERS, check_generation
from sumlab.data.cache import TokenizedCache, source_column
from sumlab.data.sources import FILE_KEY, has_split, load_raw
from sumlab.errors import SumlabError, guarded
from sumlab.family import Causal, Seq2Seq, make_family
from sumlab.generation import build_generation_config
from sumlab.predict import backends, writer
from sumlab.predict.bucketing import BucketBatchSampler
from sumlab.predict.config import OUTPUT_FORMATS, digest, path_name
from sumlab.predict.loading import LoadedModel, load
from sumlab.rouge import MULTI_REFERENCE, score_corpus
from sumlab.rundir import versions, write_json

STATS = ("examples", "batches", "input_tokens", "input_padding", "generated_tokens")


class PredictModule(L.LightningModule):
    """Generates one batch per step with its engine and returns the records for the shard writer.

    With CTranslate2 the transformers model is not a submodule (Lightning must not move it to a GPU): it is
    only needed to convert, once, in ``setup`` (which every rank runs, also one without batches), and then
    dropped. Token and padding counts are summed over ranks by ``gather_stats`` after ``Trainer.predict``:
    the predict hooks do not run on a rank without batches, so they cannot hold a collective call.
    """

    def __init__(self, loaded: LoadedModel, family: Seq2Seq | Causal, generation_config: Any, fast_cache: bool,
                 choice: backends.Choice, cache_dir: str, seed: Optional[int]) -> None:  # fmt: skip
        super().__init__()
        # LightningModule.__init__ resets this on the instance, so a class attribute would not count.
        self.allow_zero_length_dataloader_with_multiple_devices = True  # a rank may get no batch of a short input
        self.family, self.generation_config, self.choice = family, generation_config, choice
        self.engine: backends.HFEngine | backends.CT2Engine | None = None
        if choice.backend == "hf":
            self.model = loaded.model
            self.engine = backends.HFEngine(self.model, family, generation_config, fast_cache)
        else:
            self._loaded, self._cache_dir, self._seed = loaded, cache_dir, seed
        self.conversion_seconds: Optional[float] = None
        self.stats = dict.fromkeys(STATS, 0)
        self.seconds = 0.0

    def setup(self, stage: str) -> None:
        if self.engine is not None:
            return
        loaded, trainer = self._loaded, self.trainer
        weights = digest({k: loaded.identity.get(k) for k in ("weights", "config", "name", "revision")})
        target = backends.cache_location(loaded.home, path_name(loaded.source.split(": ", 1)[-1]),
                                         str(self.choice.compute_type), weights, self._cache_dir)  # fmt: skip
        if trainer.local_rank == 0:  # once per machine; a shared disk sees one rename win
            self.conversion_seconds = backends.convert(loaded.model, loaded.tokenizer, target, str(self.choice.compute_type))
        trainer.strategy.barrier("ctranslate2 conversion")
        self.engine = backends.CT2Engine(target, self.family, self.generation_config, str(self.choice.compute_type),
                                         trainer.strategy.root_device, backends.cpu_threads(), self._seed)  # fmt: skip
        self._loaded = loaded.model = None  # the transformers weights are not needed any more

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if self.choice.backend == "ctranslate2":
            # Lists of token ids, which CTranslate2 places itself; Lightning's default would walk every int
            # (a third of the predict time at 300 short inputs).
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_predict_start(self) -> None:
        self._started = time.perf_counter()

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        assert self.engine is not None
        texts, lengths = self.engine.generate(batch)
        self.stats["examples"] += len(texts)
        self.stats["batches"] += 1
        width = max(batch["lengths"])
        self.stats["input_tokens"] += width * len(texts)
        self.stats["input_padding"] += width * len(texts) - sum(batch["lengths"])
        self.stats["generated_tokens"] += int(sum(lengths))
        records = [{"id": i, "prediction": t, "gen_len": n} for i, t, n in zip(batch["ids"], texts, lengths, strict=True)]
        return {"records": records}

    def on_predict_end(self) -> None:
        self.seconds = time.perf_counter() - self._started

    def gather_stats(self, strategy: Any) -> None:
        """Totals over ranks (every rank calls this, after Trainer.predict); the slowest rank's seconds."""
        values = torch.tensor([float(self.stats[k]) for k in STATS], device=strategy.root_device)
        totals = strategy.reduce(values, reduce_op="sum")
        slowest = strategy.reduce(torch.tensor(self.seconds, device=strategy.root_device), reduce_op="max")
        self.stats = {k: int(v) for k, v in zip(STATS, totals.tolist(), strict=True)}
        self.seconds = float(slowest)


class PredictData(L.LightningDataModule):
    """The rows still to do, memory-mapped from the tokenized cache, in length buckets; this rank's share.

    Lengths come from the cache's ``source_length`` column and rows are read a batch at a time, so a rank's
    private memory does not grow with the corpus.
    """

    def __init__(self, rows: datasets.Dataset, todo: np.ndarray, batch_size: int, sort: bool, collate: Any,
                 num_workers: int) -> None:  # fmt: skip
        super().__init__()
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.source = source_column(rows.column_names)
        self.lengths = rows.data.column("source_length").to_numpy()[todo]
        self.rows = rows.select_columns(["id", self.source])
        if len(todo) < len(rows):  # a resumed run: an indices mapping over the same files, not a copy
            self.rows = self.rows.select(todo)
        self._collate, self.batch_size, self.sort, self.num_workers = collate, batch_size, sort, num_workers

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collate([{self.source: r[self.source]} for r in rows])
        batch["ids"] = [r["id"] for r in rows]
        batch["lengths"] = [len(r[self.source]) for r in rows]
        return batch

    def predict_dataloader(self) -> DataLoader:
        sampler = BucketBatchSampler(
            self.lengths, self.batch_size, sort=self.sort, rank=self.trainer.global_rank, world_size=self.trainer.world_size
        )
        return DataLoader(self.rows, batch_sampler=sampler, collate_fn=self.collate, num_workers=self.num_workers)


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
    if cfg.metrics.multi_reference not in MULTI_REFERENCE:
        raise SumlabError(f"metrics.multi_reference={cfg.metrics.multi_reference} is unknown: use one of {list(MULTI_REFERENCE)}")
    if cfg.metrics.tokenizer is not None and cfg.metrics.tokenizer not in ROUGE_TOKENIZERS:
        raise SumlabError(f"metrics.tokenizer={cfg.metrics.tokenizer} is unknown: use one of {list(ROUGE_TOKENIZERS)}")
    if cfg.backend not in backends.BACKENDS:
        raise SumlabError(f"backend={cfg.backend} is unknown: use one of {list(backends.BACKENDS)}")
    if cfg.compute_type not in backends.COMPUTE_TYPES:
        raise SumlabError(f"compute_type={cfg.compute_type} is unknown: use one of {list(backends.COMPUTE_TYPES)}")
    if cfg.model_dir in (None, ""):
        raise SumlabError("model_dir is empty: pass model_dir=outputs/train/<run> (or an export/, a .ckpt, a hub name)")


def load_rows(cfg: DictConfig) -> datasets.Dataset:
    """The split's raw rows, checked (memory-mapped Arrow unless synthetic)."""
    split = cfg.data.split
    if not has_split(cfg.data, split):
        raise SumlabError(f"data.{FILE_KEY[split]} is not set: pass data.{FILE_KEY[split]}=path/to/file.jsonl (data.split={split})")
    if cfg.data.streaming:
        raise SumlabError("data.streaming=true is for training: predict.py reads its split through the tokenized cache; drop it")
    # predict.py has one split, so data.max_predict_samples limits whichever it is
    raw = load_raw(cfg.data, split, require_summary=False, seed=cfg.seed, limit_key="max_predict_samples",
                   cache_dir=cfg.paths.cache_dir)  # fmt: skip
    if len(raw) == 0:
        raise SumlabError(f"no examples to predict in data.split={split} of data={cfg.data.name}")
    if not _any_text(raw, cfg.data.text_column):
        raise SumlabError(f"every {cfg.data.text_column!r} (data.text_column) in data.split={split} is empty: nothing to summarize")
    return raw


def _any_text(raw: datasets.Dataset, column: str) -> bool:
    """Whether some row's text is not blank; reads Arrow batches and stops at the first such row."""
    for batch in raw.select_columns([column]).with_format("arrow").iter(batch_size=10_000):
        if pc.any(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(batch[column].fill_null(""))), 0)).as_py():
            return True
    return False


def data_identity(cfg: DictConfig, rows: datasets.Dataset, digest_of_rows: str) -> dict[str, Any]:
    """What makes "the same input": the rows as the model reads them (ids and source tokens), not their file."""
    return {"name": cfg.data.name, "split": cfg.data.split, "examples": len(rows), "rows": digest_of_rows,
            "max_source_length": cfg.data.max_source_length}  # fmt: skip


def remaining(rows: datasets.Dataset, done: dict[str, Any]) -> np.ndarray:
    """Positions of the rows without a prediction in the shards (ids compared in Arrow, not Python lists)."""
    if not done:
        return np.arange(len(rows))
    finished = pc.is_in(rows.data.column("id"), value_set=pa.array(list(done), pa.string()))
    return np.flatnonzero(~finished.to_numpy(zero_copy_only=False))


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
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")  # ours, on purpose
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the one-line error of a bad input
    is_zero = rank_zero_only.rank == 0
    out = Path(cfg.output.dir or cfg.paths.run_dir).expanduser()
    if is_zero:
        writer.check_writable(out)
    precision = resolve_precision(str(cfg.trainer.precision))
    raw = load_rows(cfg)
    loaded = load(str(cfg.model_dir), cfg.model, cfg.paths.cache_dir)
    if precision.startswith("16") and getattr(loaded.model.config, "model_type", "") in ("t5", "mt5", "umt5", "longt5"):
        raise SumlabError(f"trainer.precision={precision} is not safe for {loaded.model.config.model_type} models: {FP16_UNSAFE_HINT}")
    # The run's own setting when it is a real one (a redacted or damaged config falls back to the default).
    run_tokenizer = loaded.rouge_tokenizer if loaded.rouge_tokenizer in ROUGE_TOKENIZERS else None
    rouge_tokenizer = cfg.metrics.tokenizer or run_tokenizer or "default"
    family = make_family(loaded.family, loaded.tokenizer, loaded.prefix, loaded.separator, chat=loaded.chat)
    # Tokenized once into the cache training uses (a file lock: one rank builds, the others wait), then
    # memory-mapped by every rank. Only rank 0 honours data.overwrite_cache, so the ranks do not rebuild in turn.
    cache = TokenizedCache(cfg.data, family, cfg.paths.cache_dir, overwrite=is_zero and bool(cfg.data.overwrite_cache))
    cached = cache.prepare(raw, cfg.data.split)
    rows = TokenizedCache.load(cached)
    generation_config = build_generation_config(cfg.generation, loaded.model)
    generation = OmegaConf.to_container(cfg.generation, resolve=True)
    on_gpu = torch.cuda.is_available() and str(cfg.trainer.accelerator) in ("auto", "gpu", "cuda")
    choice = backends.choose(str(cfg.backend), str(cfg.compute_type), generation_config, loaded.family, loaded.model,
                             "cuda" if on_gpu else "cpu")  # fmt: skip
    meta = {
        "model": loaded.identity,
        "data": data_identity(cfg, rows, TokenizedCache.digest(cached)),
        "generation": {**generation, "precision": precision, "backend": choice.backend, "compute_type": choice.compute_type},
    }
    meta["fingerprint"] = digest(meta["model"], meta["data"], meta["generation"])
    writer.prepare(out, meta, bool(cfg.output.overwrite), is_zero)

    todo = remaining(rows, writer.read_shards(out))
    module = PredictModule(loaded, family, generation_config, bool(cfg.fast_beam_cache), choice, cfg.paths.cache_dir, cfg.seed)
    if len(todo):
        if cfg.seed is not None:
            L.seed_everything(cfg.seed, verbose=False)
        collate = module.engine.collate if module.engine is not None else backends.CT2Engine.collate
        data = PredictData(rows, todo, int(cfg.batch_size), bool(cfg.sort_by_length), collate, int(cfg.data.num_workers))
        trainer = build_trainer(cfg, precision, [writer.ShardWriter(out)])
        trainer.predict(module, datamodule=data, return_predictions=False)
        module.gather_stats(trainer.strategy)
        trainer.strategy.barrier()  # every shard is complete before rank 0 reads them
        if not trainer.is_global_zero:
            return {}
    elif not is_zero:
        return {}

    # rank 0 only, after generation: ids in input order with their summaries and references
    examples = rows.select_columns([c for c in ("id", "summary", "references") if c in rows.column_names]).to_list()
    merged = writer.merge(out, examples)
    stats, seconds = module.stats, module.seconds
    # data.reference_columns: every reference of an example, else the summary column's one
    references = [e["references"] for e in examples] if "references" in examples[0] else [r.get("reference") for r in merged]
    metrics: dict[str, Any] = {
        "model_dir": str(cfg.model_dir),
        "model": loaded.source,
        "family": loaded.family,
        "data": cfg.data.name,
        "split": cfg.data.split,
        "examples": len(merged),
        "generated_now": stats["examples"],
        "resumed": len(merged) - stats["examples"],
        "devices": int(trainer.world_size) if len(todo) else 0,
        "precision": precision,
        "batch_size": int(cfg.batch_size),
        "sort_by_length": bool(cfg.sort_by_length),
        "backend": choice.backend,
        "backend_reason": choice.reason,
        "compute_type": choice.compute_type,
        "conversion_seconds": None if module.conversion_seconds is None else round(module.conversion_seconds, 3),
        "fast_beam_cache": bool(getattr(module.engine, "fast_cache", False)),
        "generation": generation,
        "samples_per_second": round(stats["examples"] / seconds, 3) if seconds else None,
        "generated_tokens_per_second": round(stats["generated_tokens"] / seconds, 1) if seconds else None,
        "mean_generated_length": round(sum(r["gen_len"] or 0 for r in merged) / len(merged), 2),
        "padding_fraction": round(stats["input_padding"] / stats["input_tokens"], 4) if stats["input_tokens"] else None,
        "predict_seconds": round(seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    if all(r is not None for r in references):
        metrics["rouge_tokenizer"] = rouge_tokenizer
        metrics["rouge"] = score_corpus([r["prediction"] for r in merged], references, rouge_tokenizer, cfg.metrics.multi_reference)
    metrics["versions"] = versions()
    write_json(out / writer.METRICS, metrics)
    files = writer.write_outputs(out, merged, cfg.output.format, cfg.output.id_header, cfg.output.summary_header)
    _print_summary(metrics, files)
    return metrics


def _print_summary(metrics: dict[str, Any], files: list[Path]) -> None:
    rouge = metrics.get("rouge")
    engine = metrics["backend"] + (f" {metrics['compute_type']}" if metrics["compute_type"] else "")
    parts = [f"{metrics['examples']} examples ({metrics['resumed']} from earlier shards)",
             f"backend {engine} ({metrics['backend_reason']})"]  # fmt: skip
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

