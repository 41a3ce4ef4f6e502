"""One prediction run, in three steps: prepare (check, load, tokenize, fingerprint), generate (Trainer.predict
into per-rank shards), finish (rank 0: merge by id, score, write the outputs and metrics.json).

Every rank runs :func:`run` (Lightning relaunches the script once per extra device). Before generation only
rank 0 changes files; the other ranks start while rank 0 waits for them in the process-group rendezvous, so
everything they read before it is settled. Each rank appends to its own shard; after a barrier rank 0 merges.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import datasets
import lightning.pytorch as L
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from sumlab.config.predict import OUTPUT_FORMATS, listed
from sumlab.config.rules import check_decoding, check_generation, check_metrics
from sumlab.core.errors import SumlabError, guarded
from sumlab.core.io import digest, versions, write_json
from sumlab.core.runtime import auto_precision, check_precision, quiet_library_logs, resolve_device
from sumlab.data.cache import TokenizedCache
from sumlab.data.sources import FILE_KEY, has_split, load_raw, reference_columns
from sumlab.family import Causal, Seq2Seq, make_family
from sumlab.generation import engines
from sumlab.generation.config import build_candidate_config, candidate_settings
from sumlab.generation.selection import Selector
from sumlab.models.loading import LoadedModel, load, resolve
from sumlab.predict import mbr, writer
from sumlab.predict.module import PredictData, PredictModule
from sumlab.text.rouge import TOKENIZERS, score_corpus


@dataclass
class Job:
    """What prepare() settled, the same on every rank."""

    out: Path
    loaded: LoadedModel
    family: Seq2Seq | Causal
    rows: datasets.Dataset  # the split, tokenized and memory-mapped
    todo: np.ndarray  # positions of the rows without a prediction in the shards
    generation_config: Any
    choice: engines.Choice
    precision: str
    rouge_tokenizer: str
    rouge_remove: list[str]  # metrics.remove_tokens, else the training run's


@guarded
def run(cfg: DictConfig) -> dict[str, Any]:
    """Predict, merge and score; returns metrics.json's content (on rank 0; an empty dict elsewhere)."""
    validate(cfg)
    started = time.perf_counter()
    quiet_prediction_logs()
    is_zero = rank_zero_only.rank == 0
    if mbr.wanted(cfg):
        return run_candidates(cfg, is_zero, started)
    job = prepare(cfg, is_zero)
    module, world_size = generate(cfg, job)
    if not is_zero:
        return {}
    return finish(cfg, job, module, world_size, started)


def validate(cfg: DictConfig) -> None:
    if cfg.batch_size < 1:
        raise SumlabError(f"batch_size={cfg.batch_size} must be at least 1")
    if cfg.output.format not in OUTPUT_FORMATS:
        raise SumlabError(f"output.format={cfg.output.format} is unknown: use one of {list(OUTPUT_FORMATS)}")
    if cfg.data.split not in FILE_KEY:
        raise SumlabError(f"data.split={cfg.data.split} is unknown: use one of {list(FILE_KEY)}")
    check_generation(cfg.generation)
    check_metrics(cfg.metrics)
    if cfg.backend not in engines.BACKENDS:
        raise SumlabError(f"backend={cfg.backend} is unknown: use one of {list(engines.BACKENDS)}")
    if cfg.compute_type not in engines.COMPUTE_TYPES:
        raise SumlabError(f"compute_type={cfg.compute_type} is unknown: use one of {list(engines.COMPUTE_TYPES)}")
    models = listed(cfg.model_dir)
    if not models or not all(models):
        raise SumlabError("model_dir is empty: pass model_dir=outputs/train/<run> (or an export/, a .ckpt, a hub name)")
    check_decoding(cfg.decoding, len(models))
    if len(models) > 1 and not cfg.decoding.select_only:
        for model_dir in models:  # a typo in the last model fails now, not after generating with the others
            resolve(model_dir)


def quiet_prediction_logs() -> None:
    quiet_library_logs()
    # Our batch sampler returns every index by construction; Lightning cannot know and says so.
    warnings.filterwarnings("ignore", message=".*custom batch sampler.*")
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")  # ours, on purpose
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the one-line error of a bad input


# --- prepare -------------------------------------------------------------------------------------------
def prepare(cfg: DictConfig, is_zero: bool) -> Job:
    """Check the output, load the split and the model, tokenize through the cache, fingerprint the job."""
    out = Path(cfg.output.dir or cfg.paths.run_dir).expanduser()
    if is_zero:
        writer.check_writable(out)
    raw = load_rows(cfg)
    loaded = load(str(cfg.model_dir), cfg.model, cfg.paths.cache_dir)
    precision = auto_precision(str(cfg.trainer.precision), cfg.trainer.accelerator, loaded.safe_precisions)
    check_precision(precision, loaded.safe_precisions, loaded.identity.get("model_type") or str(cfg.model_dir))
    family = make_family(loaded.family, loaded.tokenizer, loaded.prefix, loaded.separator, chat=loaded.chat)
    # Tokenized once into the cache training uses (a file lock: one rank builds, the others wait), then
    # memory-mapped by every rank. Only rank 0 honours data.overwrite_cache, so the ranks do not rebuild in turn.
    cache = TokenizedCache(cfg.data, family, cfg.paths.cache_dir, overwrite=is_zero and bool(cfg.data.overwrite_cache))
    cached = cache.prepare(raw, cfg.data.split)
    rows = TokenizedCache.load(cached)
    generation_config = build_candidate_config(cfg.generation, cfg.decoding, loaded)  # from its config: no weights
    choice = engines.choose(str(cfg.backend), str(cfg.compute_type), generation_config, loaded.family,
                            loaded.config, loaded.adapter, resolve_device(cfg.trainer.accelerator),
                            loaded.safe_precisions)  # fmt: skip
    generation = OmegaConf.to_container(cfg.generation, resolve=True)
    meta = {
        "model": loaded.identity,
        "data": data_identity(cfg, rows, TokenizedCache.digest(cached)),
        "generation": {
            **generation,
            "precision": precision,
            "backend": choice.backend,
            "compute_type": choice.compute_type,
        },
    }
    if candidate_settings(cfg.decoding) is not None:  # selection keys (utility, weights) do not change candidates
        meta["generation"]["candidates"] = candidate_settings(cfg.decoding)
    meta["fingerprint"] = digest(meta["model"], meta["data"], meta["generation"])
    writer.prepare(out, meta, bool(cfg.output.overwrite), is_zero)
    todo = remaining(rows, writer.done_ids(out))
    return Job(out, loaded, family, rows, todo, generation_config, choice, precision, rouge_tokenizer(cfg, loaded),
               rouge_remove(cfg, loaded))  # fmt: skip


def load_rows(cfg: DictConfig) -> datasets.Dataset:
    """The split's raw rows, checked (memory-mapped Arrow unless synthetic)."""
    split = cfg.data.split
    if not has_split(cfg.data, split):
        raise SumlabError(
            f"data.{FILE_KEY[split]} is not set: pass data.{FILE_KEY[split]}=path/to/file.jsonl (data.split={split})"
        )
    if cfg.data.streaming:
        raise SumlabError(
            "data.streaming=true is for training: predict.py reads its split through the tokenized cache; drop it"
        )
    # predict.py has one split, so data.max_predict_samples limits whichever it is
    raw = load_raw(cfg.data, split, require_summary=False, seed=cfg.seed, limit_key="max_predict_samples",
                   cache_dir=cfg.paths.cache_dir)  # fmt: skip
    if len(raw) == 0:
        raise SumlabError(f"no examples to predict in data.split={split} of data={cfg.data.name}")
    named = list(cfg.data.reference_columns or [])
    if named and not reference_columns(cfg.data, list(raw.column_names)):  # else scored against the summary
        raise SumlabError(
            f"data.reference_columns {named} not in data.split={split}; it has {list(raw.column_names)}: "
            f"fix the names, or set data.reference_columns=null to score against data.summary_column"
        )
    if not _any_text(raw, cfg.data.text_column):
        raise SumlabError(
            f"every {cfg.data.text_column!r} (data.text_column) in data.split={split} is empty: nothing to summarize"
        )
    return raw


def _any_text(raw: datasets.Dataset, column: str) -> bool:
    """Whether some row's text is not blank; reads Arrow batches and stops at the first such row."""
    for batch in raw.select_columns([column]).with_format("arrow").iter(batch_size=10_000):
        if pc.any(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(batch[column].fill_null(""))), 0)).as_py():
            return True
    return False


def rouge_tokenizer(cfg: DictConfig, loaded: LoadedModel) -> str:
    """metrics.tokenizer, else the training run's own (if a real one: a damaged config falls back), else default."""
    run_tokenizer = loaded.rouge_tokenizer if loaded.rouge_tokenizer in TOKENIZERS else None
    return cfg.metrics.tokenizer or run_tokenizer or "default"


def rouge_remove(cfg: DictConfig, loaded: LoadedModel) -> list[str]:
    """metrics.remove_tokens, else the training run's, else none."""
    if cfg.metrics.remove_tokens is not None:
        return list(cfg.metrics.remove_tokens)
    return loaded.rouge_remove or []


def data_identity(cfg: DictConfig, rows: datasets.Dataset, digest_of_rows: str) -> dict[str, Any]:
    """What makes "the same input": the rows as the model reads them (ids and source tokens), not their file."""
    return {"name": cfg.data.name, "split": cfg.data.split, "examples": len(rows), "rows": digest_of_rows,
            "max_source_length": cfg.data.max_source_length}  # fmt: skip


def remaining(rows: datasets.Dataset, done: Collection[str]) -> np.ndarray:
    """Positions of the rows without a prediction in the shards (ids compared in Arrow, not Python lists)."""
    if not done:
        return np.arange(len(rows))
    finished = pc.is_in(rows.data.column("id"), value_set=pa.array(list(done), pa.string()))
    return np.flatnonzero(~finished.to_numpy(zero_copy_only=False))


# --- generate ------------------------------------------------------------------------------------------
def generate(cfg: DictConfig, job: Job, module_class: type[PredictModule] = PredictModule) -> tuple[PredictModule, int]:
    """Trainer.predict over the rows still to do, each rank writing its shard; (module, world size; 0 if none ran)."""
    module = module_class(job.loaded, job.family, job.generation_config, bool(cfg.fast_beam_cache), job.choice,
                           cfg.paths.cache_dir, cfg.seed)  # fmt: skip
    if not len(job.todo):
        return module, 0
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, verbose=False)
    collate = module.engine.collate if module.engine is not None else engines.CT2Engine.collate
    data = PredictData(
        job.rows, job.todo, int(cfg.batch_size), bool(cfg.sort_by_length), collate, int(cfg.data.num_workers)
    )
    trainer = build_trainer(cfg, job.precision, [writer.ShardWriter(job.out)])
    trainer.predict(module, datamodule=data, return_predictions=False)
    module.gather_stats(trainer.strategy)
    trainer.strategy.barrier()  # every shard is complete before rank 0 reads them
    return module, int(trainer.world_size)


TRAINING_ONLY = ("max_epochs", "max_steps", "min_epochs", "accumulate_grad_batches", "gradient_clip_val",
                 "gradient_clip_algorithm", "val_check_interval", "check_val_every_n_epoch", "limit_train_batches",
                 "limit_val_batches", "limit_test_batches", "num_sanity_val_steps", "log_every_n_steps")  # fmt: skip


def build_trainer(cfg: DictConfig, precision: str, callbacks: list[Any]) -> L.Trainer:
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}
    for key in TRAINING_ONLY:
        kwargs.pop(key, None)
    kwargs.update(precision=precision, use_distributed_sampler=False, logger=False)
    return L.Trainer(**kwargs, callbacks=callbacks)


# --- finish (rank 0) -----------------------------------------------------------------------------------
def finish(cfg: DictConfig, job: Job, module: PredictModule, world_size: int, started: float) -> dict[str, Any]:
    """Merge the shards in input order, score against the references, write metrics.json and the predictions."""
    examples = job.rows.select_columns(
        [c for c in ("id", "summary", "references") if c in job.rows.column_names]
    ).to_list()
    merged = writer.merge(job.out, examples)
    metrics = run_metrics(cfg, job, module, merged, world_size)
    metrics.update(score(cfg, examples, merged, job.rouge_tokenizer, job.rouge_remove))
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    metrics["versions"] = versions()
    write_json(job.out / writer.METRICS, metrics)
    files = writer.write_outputs(job.out, merged, cfg.output.format, cfg.output.id_header, cfg.output.summary_header)
    print_summary(metrics, files)
    return metrics


def score(cfg: DictConfig, examples: list[dict[str, Any]], merged: list[dict[str, Any]], tokenizer: str,
          remove: list[str]) -> dict[str, Any]:  # fmt: skip
    """ROUGE of the merged predictions where every example has a reference; else nothing."""
    # data.reference_columns: every reference of an example, else the summary column's one
    references = (
        [e["references"] for e in examples] if "references" in examples[0] else [r.get("reference") for r in merged]
    )
    if not all(r is not None for r in references):
        return {}
    rouge = score_corpus([r["prediction"] for r in merged], references, tokenizer, cfg.metrics.multi_reference, remove)
    return {"rouge_tokenizer": tokenizer, **({"rouge_remove_tokens": remove} if remove else {}), "rouge": rouge}


def _rate(count: float, seconds: float, digits: int) -> Optional[float]:
    return round(count / seconds, digits) if seconds else None


def run_metrics(cfg: DictConfig, job: Job, module: PredictModule, merged: list[dict[str, Any]],
                world_size: int) -> dict[str, Any]:  # fmt: skip
    """metrics.json's description of the run: what ran, on what, how fast (ROUGE is added by finish)."""
    stats, seconds = module.stats, module.seconds
    return {
        "model_dir": str(cfg.model_dir),
        "model": job.loaded.source,
        "family": job.loaded.family,
        "data": cfg.data.name,
        "split": cfg.data.split,
        "examples": len(merged),
        "generated_now": stats["examples"],
        "resumed": len(merged) - stats["examples"],
        "devices": world_size,
        "precision": job.precision,
        "batch_size": int(cfg.batch_size),
        "sort_by_length": bool(cfg.sort_by_length),
        "backend": job.choice.backend,
        "backend_reason": job.choice.reason,
        "compute_type": job.choice.compute_type,
        "conversion_seconds": None if module.conversion_seconds is None else round(module.conversion_seconds, 3),
        "fast_beam_cache": bool(getattr(module.engine, "fast_cache", False)),
        "generation": OmegaConf.to_container(cfg.generation, resolve=True),
        "samples_per_second": _rate(stats["examples"], seconds, 3),
        "generated_tokens_per_second": _rate(stats["generated_tokens"], seconds, 1),
        "mean_generated_length": round(sum(r["gen_len"] or 0 for r in merged) / len(merged), 2),
        "padding_fraction": round(stats["input_padding"] / stats["input_tokens"], 4) if stats["input_tokens"] else None,
        "predict_seconds": round(seconds, 3),
    }


def rouge_text(rouge: dict[str, float]) -> str:
    return "ROUGE-1/2/L/Lsum " + "/".join(f"{rouge[k]:.4f}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))


def print_summary(metrics: dict[str, Any], files: list[Path]) -> None:
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
        parts.append(rouge_text(rouge))
    print("predict: " + ", ".join(parts))
    for f in files:
        print(f"wrote {f}")
    sys.stdout.flush()


# --- MBR decoding and ensembles (predict.mbr) ------------------------------------------------------------
EXAMPLE_COLUMNS = ("id", "summary", "references")


def run_candidates(cfg: DictConfig, is_zero: bool, started: float) -> dict[str, Any]:
    """Each model's candidates over the whole split, in turn (one model in memory at a time), then rank 0 selects."""
    out = Path(cfg.output.dir or cfg.paths.run_dir).expanduser()
    if is_zero:
        writer.check_writable(out)
    mbr.check_output(out, bool(cfg.output.overwrite), is_zero)
    if cfg.decoding.select_only:
        return select_again(cfg, out, is_zero, started) if is_zero else {}
    stages, scoring, examples = [], [], []
    for label, stage in mbr.stage_configs(cfg, out):
        job = prepare(stage, is_zero)
        module, world_size = generate(stage, job, mbr.CandidateModule)
        stages.append(mbr.stage_info(label, stage, job, module, world_size))
        scoring.append((job.rouge_tokenizer, job.rouge_remove))
        if is_zero and not examples:
            examples = job.rows.select_columns([c for c in EXAMPLE_COLUMNS if c in job.rows.column_names]).to_list()
        job.loaded.release()  # the next model loads only once this one is released
        job = module = None
        release_memory()
    if not is_zero:
        return {}
    pools = mbr.shard_pools(stages, [e["id"] for e in examples])
    # metrics.tokenizer and remove_tokens, else the first model's run's
    return finish_candidates(cfg, out, examples, pools, *scoring[0], started, [s.info for s in stages])


def select_again(cfg: DictConfig, out: Path, is_zero: bool, started: float) -> dict[str, Any]:
    """decoding.select_only: MBR again over an earlier output's candidates.jsonl (no model is loaded)."""
    paths = mbr.candidates_files(cfg, out)
    raw = load_rows(cfg)
    examples = raw.select_columns([c for c in EXAMPLE_COLUMNS if c in raw.column_names]).to_list()
    earlier = paths[0].parent / writer.METRICS  # metrics.*, else what the first output selected with
    recorded = json.loads(earlier.read_text(encoding="utf-8")) if earlier.is_file() else {}
    tokenizer = cfg.metrics.tokenizer or recorded.get("utility_tokenizer") or "default"
    remove = list(cfg.metrics.remove_tokens if cfg.metrics.remove_tokens is not None else
                  recorded.get("utility_remove_tokens", []))  # fmt: skip
    pools = mbr.file_pools(paths, [e["id"] for e in examples], mbr.labels(cfg))
    return finish_candidates(cfg, out, examples, pools, tokenizer, remove, started, [],
                             candidates_from=list(map(str, paths)))  # fmt: skip


def finish_candidates(cfg: DictConfig, out: Path, examples: list[dict[str, Any]], pools: Any, tokenizer: str,
                      remove: list[str], started: float, models: list[dict[str, Any]],
                      **extra: Any) -> dict[str, Any]:  # fmt: skip
    """Rank 0: select per input (candidates.jsonl), score, metrics.json, then predictions.jsonl (+ .csv) last."""
    selector = Selector(str(cfg.decoding.utility), tokenizer, mbr.model_weights(cfg), remove)
    generation_seconds = sum(m["generation_seconds"] for m in models)
    fresh = models and not any(m["resumed"] for m in models)  # inputs per second of generation with every model
    selecting = time.perf_counter()
    merged = mbr.select_all(out, examples, pools, selector)
    metrics = {"model_dir": mbr.labels(cfg), "models": models, "data": cfg.data.name, "split": cfg.data.split,
               "examples": len(merged), "decoding": mbr.decoding_settings(cfg), **extra, **selector.summary(),
               "selection_wall_seconds": round(time.perf_counter() - selecting, 3),
               "generation_seconds": round(generation_seconds, 3),
               "samples_per_second": _rate(len(merged), generation_seconds, 3) if fresh else None,
               "generation": OmegaConf.to_container(cfg.generation, resolve=True)}  # fmt: skip
    metrics.update(score(cfg, examples, merged, tokenizer, remove))
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    metrics["versions"] = versions()
    write_json(out / writer.METRICS, metrics)
    files = writer.write_outputs(out, merged, cfg.output.format, cfg.output.id_header, cfg.output.summary_header)
    print_candidates_summary(metrics, [out / mbr.CANDIDATES, *files])
    return metrics


def release_memory() -> None:
    """Give a finished model's memory back before the next one loads."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def print_candidates_summary(metrics: dict[str, Any], files: list[Path]) -> None:
    rouge = metrics.get("rouge")
    parts = [f"{metrics['examples']} examples",
             f"{len(metrics['model_dir'])} model(s), {metrics['candidates_per_input']} candidates per input",
             f"MBR ({metrics['utility']}) changed {metrics['changed_share']:.1%} of the first candidates",
             f"generation {metrics['generation_seconds']} s",
             f"selection {metrics['selection_ms_per_input']} ms/input",
             f"tokenizing {metrics['tokenize_ms_per_input']} ms/input"]  # fmt: skip
    if rouge:
        parts.append(rouge_text(rouge))
    print("predict: " + ", ".join(parts))
    for f in files:
        print(f"wrote {f}")
