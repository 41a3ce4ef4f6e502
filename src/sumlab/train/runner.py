"""One training run: config -> data -> model -> Lightning fit/test -> export, metrics.json, summary."""

from __future__ import annotations

import functools
import signal
import sys
import time
from typing import Any, Optional

import datasets
import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from sumlab import sweep
from sumlab.config.rules import validate
from sumlab.config.schema import enum_value
from sumlab.core.errors import SumlabError, guarded
from sumlab.core.runtime import auto_precision, quiet_library_logs
from sumlab.data.datamodule import SummarizationDataModule
from sumlab.data.sources import Texts, has_split, load_raw, scored_against
from sumlab.family import check_packing, make_family
from sumlab.generation.config import build_generation_config
from sumlab.models import build
from sumlab.models.adapters import checkpoint_state
from sumlab.text.prompts import ChatPrompt
from sumlab.train import predictions
from sumlab.train.module import SummarizationModule
from sumlab.train.predictions import TestPredictionWriter
from sumlab.train.rundir import RunDir
from sumlab.train.summary import print_summary


def load_splits(cfg: DictConfig) -> dict[str, datasets.Dataset]:
    """train and validation are required for training; test only when configured and summarized."""
    data = cfg.data
    load = functools.partial(load_raw, data, seed=cfg.seed, cache_dir=cfg.paths.cache_dir)
    splits = {s: load(s) for s in ("train", "validation")}
    if cfg.test and has_split(data, "test"):
        try:
            test = load("test", require_summary=False)
        except SumlabError as ex:  # e.g. a hub preset's test split with data.test_file=null
            raise SumlabError(f"{ex}; or pass test=false to train without a test step") from None
        if data.summary_column in test.column_names:
            splits["test"] = test
        else:
            print(
                f"note: the test split has no {data.summary_column!r} column: skipping the test step", file=sys.stderr
            )
    if rank_zero_only.rank == 0:
        for split in ("validation", "test"):
            if split in splits:
                print(f"data: {split} is scored against {scored_against(data, list(splits[split].column_names))}")
    return splits


def build_module(
    cfg: DictConfig, splits: dict[str, datasets.Dataset]
) -> tuple[SummarizationModule, SummarizationDataModule, int]:
    train_texts = Texts(splits["train"], cfg.data)
    model, tokenizer, added = build(
        cfg.model, cfg.data, train_texts, cfg.paths.cache_dir, cfg.get("qlora"), cfg.trainer.accelerator
    )
    family = make_family(
        enum_value(cfg.model.family), tokenizer, cfg.model.prefix, cfg.model.separator,
        chat=ChatPrompt.from_config(cfg.model), packing=cfg.data.packing,
    )  # fmt: skip
    if cfg.data.packing:
        check_packing(model)  # refuse, rather than train with examples attending to each other
    model.generation_config = build_generation_config(cfg.generation, model)  # exported with the model
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    module = SummarizationModule(
        model, tokenizer, family, model.generation_config, optim, rouge_tokenizer=cfg.metrics.tokenizer,
        monitor=cfg.metrics.monitor, mode=cfg.metrics.mode, multi_reference=cfg.metrics.multi_reference,
        compile=cfg.model.compile, rouge_remove=cfg.metrics.remove_tokens,
    )  # fmt: skip
    return module, SummarizationDataModule(cfg.data, family, splits, cfg.paths.cache_dir, seed=cfg.seed), added


def training_precision(cfg: DictConfig) -> str:
    """trainer.precision, with `auto` resolved among the model's safe precisions (core.runtime.auto_precision)."""
    return auto_precision(str(cfg.trainer.precision), cfg.trainer.accelerator, cfg.model.safe_precisions)


def build_trainer(cfg: DictConfig, run_dir: RunDir) -> L.Trainer:
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}
    kwargs["precision"] = training_precision(cfg)
    kwargs["use_distributed_sampler"] = False  # sumlab's batch samplers give each rank its own batches
    kwargs.update(streaming_validation(cfg, kwargs))
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    callbacks += sweep.trainer_callbacks(cfg)  # a sweep trial: Optuna pruning (none outside a sweep)
    callbacks.append(TestPredictionWriter(run_dir.path))  # test_predictions.jsonl (acts in the test step only)
    if kwargs.get("enable_progress_bar") is False:  # the switch wins over the configured bar
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if kwargs.get("limit_val_batches") == 0:  # validation off: nothing to monitor, keep what needs no metric
        print(
            "note: trainer.limit_val_batches=0: no early stopping, the last epoch's weights are exported",
            file=sys.stderr,
        )
        callbacks = [
            c
            for c in callbacks
            if not isinstance(c, EarlyStopping) and not (isinstance(c, ModelCheckpoint) and c.monitor)
        ]
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    return L.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir.path))


STREAM_VALIDATIONS = 5  # data.streaming: validations over trainer.max_steps, as the offline default's 5 epochs


def streaming_validation(cfg: DictConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    """data.streaming: validate every N training batches unless trainer.val_check_interval is set.

    A stream's epoch has no known end, so validation at epoch ends may never come before trainer.max_steps
    stops the run, and the monitored metric the callbacks need would never be logged.
    """
    if not cfg.data.streaming or kwargs.get("val_check_interval") is not None or kwargs.get("limit_val_batches") == 0:
        return {}
    every = max(1, cfg.trainer.max_steps * cfg.trainer.accumulate_grad_batches // STREAM_VALIDATIONS)
    if rank_zero_only.rank == 0:
        print(
            f"note: data.streaming=true: validating every {every} training batches "
            f"(trainer.val_check_interval={every}; set it to choose)",
            file=sys.stderr,
        )
    return {"val_check_interval": every, "check_val_every_n_epoch": None}


def check_checkpoint(path: str, module: SummarizationModule) -> None:
    """A bad or foreign checkpoint gets one clear line before Lightning tries to restore it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["state_dict"]
    except Exception as ex:  # torch raises many types for a truncated or non-checkpoint file
        raise SumlabError(
            f"cannot read checkpoint {path}: {type(ex).__name__}; pass a Lightning .ckpt written by sumlab"
        ) from None
    current = checkpoint_state(module, module.state_dict())  # with adapters: only what trains is saved
    if set(state) != set(current) or any(state[k].shape != v.shape for k, v in current.items()):
        raise SumlabError(
            f"checkpoint {path} holds a different model than this run's {type(module.model).__name__}: "
            "resume with the config it was trained with"
        )


@guarded
def run(cfg: DictConfig) -> float:
    """Train, test and export; returns the best monitored validation value (the sweep objective)."""
    validate(cfg)
    started = time.perf_counter()
    quiet_library_logs()
    L.seed_everything(cfg.seed, workers=True)
    run_dir = RunDir(cfg)
    is_zero = rank_zero_only.rank == 0
    if is_zero:
        run_dir.start()
    try:
        splits = load_splits(cfg)
        module, datamodule, added = build_module(cfg, splits)
        ckpt_path = run_dir.resolve_ckpt_path()
        if ckpt_path:
            check_checkpoint(ckpt_path, module)
        trainer = build_trainer(cfg, run_dir)
        best_ckpt, best_val = fit_and_test(cfg, trainer, module, datamodule, ckpt_path, "test" in splits)
    except SIGTERMException:  # preemption or time limit: last.ckpt was just written (callbacks.LastCheckpoint)
        if is_zero:
            run_dir.finish("interrupted", error="SIGTERM: resume with ckpt_path=last")
        print("interrupted by SIGTERM: checkpoints/last.ckpt is resumable with ckpt_path=last", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None  # the shell's code for a SIGTERM'd process
    except BaseException as ex:
        if is_zero:
            status = "pruned" if type(ex).__name__ == "TrialPruned" else "failed"  # a sweep stopped it early
            run_dir.finish(status, error=f"{type(ex).__name__}: {ex}"[:500])
        raise
    if trainer.is_global_zero:
        export_dir = run_dir.export(module.model, module.tokenizer) if cfg.export else None
        metrics = run_metrics(cfg, run_dir, trainer, module, splits, best_val, best_ckpt, ckpt_path, export_dir)
        if "test" in splits:  # test_predictions.jsonl, and the leaderboard's error bar: test examples resampled
            expected = module.test_metrics.get("num_examples")
            metrics["intervals"] = predictions.merge(run_dir.path, expected, trainer.world_size)
        metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
        metrics["tags_added_to_vocabulary"] = added
        run_dir.write_metrics(metrics)
        run_dir.finish("completed")
        print_summary(metrics)
    return float(best_val.get(cfg.metrics.monitor.split("/", 1)[-1], float("nan")))


def fit_and_test(cfg: DictConfig, trainer: L.Trainer, module: SummarizationModule, datamodule: SummarizationDataModule,
                 ckpt_path: Optional[str], test: bool) -> tuple[Optional[str], dict[str, float]]:  # fmt: skip
    """fit, then test the best checkpoint (or keep its weights); (best checkpoint, its validation metrics)."""
    if cfg.train:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    best_ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    best_state = torch.load(best_ckpt, map_location="cpu", weights_only=False, mmap=True) if best_ckpt else {}
    if not module.val_history:  # ddp_spawn: the history stayed in the spawned ranks
        module.val_history = best_state.get("sumlab_val_history", [])
    # The validation of the checkpoint that is tested and exported: after a resume, Lightning's best
    # starts afresh in the new run directory, while the history also holds the earlier run's epochs.
    best_val = module.best_validation(best_state.get("global_step"))
    if test:
        trainer.test(module, datamodule=datamodule, ckpt_path=best_ckpt or ckpt_path, verbose=False)
        if not module.test_metrics:  # ddp_spawn: only the logged metrics come back from the ranks
            module.test_metrics = {
                k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")
            }
    elif best_ckpt:
        module.load_state_dict(best_state["state_dict"], strict=module.strict_loading)
    return best_ckpt, best_val


def run_metrics(cfg: DictConfig, run_dir: RunDir, trainer: L.Trainer, module: SummarizationModule,
                splits: dict[str, Any], best_val: dict[str, float], best_ckpt: Optional[str],
                resumed_from: Optional[str], export_dir: Any) -> dict[str, Any]:  # fmt: skip
    """metrics.json: what ran, how it scored (validation of the best checkpoint, test), how fast."""
    seconds = module.train_seconds
    return {
        "run_dir": str(run_dir.path),
        "model": cfg.model.name,
        "data": cfg.data.name,
        "monitor": cfg.metrics.monitor,
        "mode": cfg.metrics.mode,
        "rouge_tokenizer": cfg.metrics.tokenizer,  # how the ROUGE below was scored (python -m sumlab.compare reads it)
        "multi_reference": cfg.metrics.multi_reference,
        "validation": best_val,
        "test": module.test_metrics,
        "examples": {
            s: len(v) if isinstance(v, datasets.Dataset) else None for s, v in splits.items()
        },  # streams: unknown
        "global_step": trainer.global_step,
        "train_tokens": module.train_tokens,
        "train_seconds": round(seconds, 3),
        "train_tokens_per_second": round(module.train_tokens / seconds, 1) if seconds else None,
        "best_checkpoint": best_ckpt,
        "resumed_from": resumed_from,
        "export_dir": str(export_dir) if export_dir else None,
    }
