"""The trial loop behind the Hydra sweeper plugin (``hydra_plugins.sumlab_optuna_sweeper``).

One loop serves one worker; any number of workers (processes, machines) run the same loop on one
study. A worker asks for a trial only while fewer than ``n_trials`` trials are finished (COMPLETE or
PRUNED) or running, so the study ends with exactly ``n_trials`` finished trials however many workers
join, and re-running the same command after an interruption continues where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import optuna
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from sumlab.core import errors
from sumlab.core.errors import SumlabError
from sumlab.sweep.pruning import best_intermediate
from sumlab.sweep.results import write_sweep_results
from sumlab.sweep.space import format_value, grid_values, params_to_arguments, parse_overrides
from sumlab.sweep.storage import Heartbeat, build_pruner, count, find_trial_id, open_storage, open_study, redact
from sumlab.sweep.trial import TRIAL_ENV, TrialRef, check_distributed, resolve_storage, set_current_trial

log = logging.getLogger(__name__)
WORKER_ENV = "SUMLAB_SWEEP_WORKER"  # worker index (make sweep sets it); seeds differ per worker
DIRECTIONS = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
# Heartbeats with ask/tell are what keep a killed worker's trial from blocking the study: not a mistake.
QUIET_WARNINGS = (
    "Heartbeat of storage is supposed to be used with Study.optimize",
    "Argument ``heartbeat_interval`` is an experimental feature",
    "Argument ``grace_period`` is an experimental feature",
)
NAN = float("nan")


@dataclass
class Sweep:
    """What one worker knows about the study it works on."""

    space: dict[str, BaseDistribution]  # the searched keys
    fixed: dict[str, str]  # overrides every trial gets unchanged
    study_name: str
    url: str  # storage URL (the training ranks reopen the study from it)
    storage: Any
    study: optuna.Study
    n_trials: int  # finished trials the study ends with (a grid: at most its size)
    extender: Optional[Callable[[DictConfig, optuna.Trial], None]]  # hydra.sweeper.custom_search_space
    meta: dict[str, Any]  # sweep_summary.json's header


class SweepLoop:
    """One worker: open the study, then ask, launch and tell until ``n_trials`` trials are finished."""

    def __init__(self, conf: Any, config: DictConfig, launcher: Any, arguments: Sequence[str]) -> None:
        self.conf = conf  # the plugin's SumlabOptunaSweeperConf (hydra.sweeper)
        self.config = config
        self.launcher = launcher
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.arguments = list(arguments)
        self.interrupted = False
        self.raise_on_signal = False  # only while no trial of this worker is between ask and tell (_on_signal)

    def run(self) -> None:
        with warnings.catch_warnings():
            for message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            self._check_start()
            sweep = self._open()
            with self._signals_interrupt():
                self._run_trials(sweep)
            self._write(sweep, plots=not self.interrupted)
        if self.interrupted:
            finished, _ = count(sweep.study)
            sys.stderr.write(f"sweep interrupted: {finished} of {sweep.n_trials} trials finished; run the same command "
                             f"(same hydra.sweep.dir={self.sweep_dir}) to continue\n")  # fmt: skip
            sys.exit(130)

    # --- opening the study ---------------------------------------------------------------------------
    def _check_start(self) -> None:
        check_distributed(self.config.trainer)
        if "LOCAL_RANK" in os.environ and os.environ["LOCAL_RANK"] != "0":
            raise SumlabError(
                "a sweep must not start inside a distributed rank: use trainer.strategy=ddp_spawn in sweeps"
            )
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")

    def _open(self) -> Sweep:
        space, fixed = parse_overrides(params_to_arguments(self.conf.params) + self.arguments)
        for key in fixed:
            space.pop(key, None)
        direction = self._direction()
        study_name = str(self.conf.study_name or "sumlab")
        url = resolve_storage(self.conf.storage, self.sweep_dir)
        storage = open_storage(url, self.conf.heartbeat_interval, self.conf.grace_period)
        study = open_study(storage, study_name, direction)
        n_existing = len(study.get_trials(deepcopy=False))
        study.sampler, seed = self._sampler(space, n_existing)
        study.pruner = build_pruner(self._pruner_conf())
        n_trials = self._n_trials(study, space)
        if n_existing == 0:
            self._enqueue(study)
        extender = get_method(self.conf.custom_search_space) if self.conf.custom_search_space else None
        log.info(f"Study {study_name} ({direction}) in {redact(url)}: {n_trials} trials, "
                 f"sampler {type(study.sampler).__name__} (seed {seed}), pruner {type(study.pruner).__name__}, "
                 f"{n_existing} trials already there")  # fmt: skip
        log.info("Search space: " + ", ".join(f"{k}: {d}" for k, d in space.items()))
        meta = {"study_name": study_name, "storage": redact(url), "direction": direction, "n_trials": n_trials,
                "sweep_dir": str(self.sweep_dir.resolve()), "monitor": str(self.config.metrics.monitor)}  # fmt: skip
        return Sweep(space, fixed, study_name, url, storage, study, n_trials, extender, meta)

    def _direction(self) -> str:
        direction = str(self.conf.direction).lower().split(".")[-1]
        if direction not in DIRECTIONS:
            raise SumlabError(f"hydra.sweeper.direction={self.conf.direction}: use maximize or minimize (max/min)")
        return DIRECTIONS[direction]

    def _sampler(self, space: dict[str, Any], n_existing: int) -> tuple[Any, Optional[int]]:
        conf = self.conf.sampler
        if conf is None:
            return optuna.samplers.TPESampler(), None
        conf = OmegaConf.to_container(conf, resolve=True) if OmegaConf.is_config(conf) else dict(conf)
        seed = conf.pop("seed", None)
        if seed is not None:  # a resumed sweep or another worker must not replay the same points
            seed = int(seed) + 7919 * n_existing + 104729 * int(os.environ.get(WORKER_ENV, "0") or 0)
        target = str(conf.get("_target_", ""))
        if target.endswith("GridSampler"):
            conf["search_space"] = {k: grid_values(k, d) for k, d in space.items()}
        return instantiate(conf, seed=seed), seed

    def _pruner_conf(self) -> Optional[dict]:
        conf = self.conf.pruner
        return OmegaConf.to_container(conf, resolve=True) if OmegaConf.is_config(conf) else conf

    def _n_trials(self, study: optuna.Study, space: dict[str, Any]) -> int:
        n_trials = int(self.conf.n_trials)
        if isinstance(study.sampler, optuna.samplers.GridSampler):
            grid = math.prod(len(grid_values(k, d)) for k, d in space.items())
            if grid < n_trials:
                log.info(f"Grid of {grid} points: n_trials {n_trials} -> {grid}")
                return grid
        return n_trials

    def _enqueue(self, study: optuna.Study) -> None:
        for params in self.conf.enqueue_trials or []:
            params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params)
            study.enqueue_trial(params, skip_if_exists=True)

    # --- the loop ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals_interrupt(self) -> Iterator[None]:
        """SIGINT/SIGTERM end the loop after the running trials are recorded (only the main thread can trap them)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            for sig in previous:
                signal.signal(sig, self._on_signal)
        try:
            yield
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Stop the running trials (or a wait) at once; anywhere else (asking, recording, writing) the loop stops at
        its next check instead: a KeyboardInterrupt raised between `ask` and `tell` would leave a trial RUNNING."""
        self.interrupted = True
        if self.raise_on_signal:
            raise KeyboardInterrupt

    def _run_trials(self, sweep: Sweep) -> None:
        consecutive_failures = 0
        while True:
            if self.interrupted:
                raise KeyboardInterrupt
            finished, running = count(sweep.study)
            if finished >= sweep.n_trials:
                return
            if finished + len(running) >= sweep.n_trials:  # the rest are running elsewhere: wait for them
                optuna.storages.fail_stale_trials(sweep.study)
                self.raise_on_signal = True
                try:
                    time.sleep(self.conf.poll_seconds)
                finally:
                    self.raise_on_signal = False
                continue
            batch = self._ask(sweep)
            if not batch:
                continue
            failed = self._run_batch(sweep, batch)
            consecutive_failures = consecutive_failures + 1 if failed == len(batch) else 0
            if self.conf.max_consecutive_failures and consecutive_failures >= self.conf.max_consecutive_failures:
                raise SumlabError(
                    f"{consecutive_failures} trials in a row failed (see trials.csv in {self.sweep_dir}): "
                    "fix the cause, then re-run the same command to continue the sweep"
                )
            self._write(sweep, plots=False)

    def _ask(self, sweep: Sweep) -> list[optuna.Trial]:
        batch = []
        for _ in range(max(1, int(self.conf.n_jobs))):
            trial = sweep.study.ask(fixed_distributions=sweep.space)
            finished, running = count(sweep.study)
            numbers = sorted(t.number for t in running)
            # Two workers asked at once past n_trials: the later number gives way (recorded FAIL, not counted).
            if trial.number in numbers and numbers.index(trial.number) >= sweep.n_trials - finished:
                trial.set_user_attr("error", "surplus: n_trials were already finished or running")
                sweep.study.tell(trial, state=TrialState.FAIL)
                break
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            if sweep.extender is not None:
                sweep.extender(self.config, trial)
            batch.append(trial)
        return batch

    def _run_batch(self, sweep: Sweep, batch: list[optuna.Trial]) -> int:
        """Launch the batch's trials and record each one's outcome; returns how many failed."""
        ids = [find_trial_id(sweep.storage, sweep.study_name, t.number) for t in batch]
        overrides = [self._trial_overrides(sweep, t, i) for t, i in zip(batch, ids)]
        beats = [Heartbeat(sweep.storage, i, self.conf.heartbeat_interval) for i in ids]
        refs = [TrialRef(sweep.url, sweep.study_name, i, t.number, self._pruner_conf()) for t, i in zip(batch, ids)]
        set_current_trial(refs[0] if len(batch) == 1 else None)  # in-process launchers run one at a time
        errors.last_reported = ""  # a trial's one-line user error: it exits (SystemExit) instead of raising
        try:
            returns, crash = self._launch(batch, overrides)
        finally:
            set_current_trial(None)
            for b in beats:
                b.close()
            _finish_wandb()
        last_error = getattr(errors, "last_reported", "")
        states = [self._tell(sweep, trial, i, returns[n] if n < len(returns) else None, crash, last_error)
                  for n, (trial, i) in enumerate(zip(batch, ids))]  # fmt: skip
        if self.interrupted:
            raise KeyboardInterrupt
        return states.count(TrialState.FAIL)

    def _trial_overrides(self, sweep: Sweep, trial: optuna.Trial, trial_id: int) -> list[str]:
        overrides = [f"{k}={v}" for k, v in sweep.fixed.items()]
        overrides += [f"{k}={format_value(v)}" for k, v in trial.params.items()]
        logger = self.config.get("logger") or {}
        if "wandb" in logger and logger.wandb is not None:  # one W&B run per trial, grouped by the sweep
            if logger.wandb.get("group") is None:
                overrides.append(f"logger.wandb.group={format_value(sweep.study_name)}")
            overrides.append(f"logger.wandb.name={format_value(f'{sweep.study_name}-trial{trial.number}')}")
        ref = f"{trial_id}:{trial.number}:{sweep.study_name}"
        overrides.append(f"++hydra.job.env_set.{TRIAL_ENV}={format_value(ref)}")
        if self.conf.n_jobs > 1:  # a batch's numbers need not be consecutive: name each directory by its trial
            overrides.append(f"hydra.sweep.subdir={trial.number}")
        return overrides

    def _launch(self, batch: list[optuna.Trial], overrides: list[list[str]]) -> tuple[list, Optional[BaseException]]:
        """(the jobs' JobReturns, the exception that ended the launch instead, if one did)."""
        if self.interrupted:  # a signal while the batch was asked for: its trials are recorded as interrupted
            return [], None
        try:
            for trial in batch:
                params = " ".join(f"{k}={format_value(v)}" for k, v in trial.params.items())
                log.info(f"Trial {trial.number}: {params}")
            self.raise_on_signal = True
            return list(self.launcher.launch(overrides, initial_job_idx=batch[0].number)), None
        except KeyboardInterrupt:
            self.interrupted = True
            return [], None
        except BaseException as ex:  # SystemExit from a refused config, or a launcher error
            return [], ex
        finally:
            self.raise_on_signal = False

    # --- recording a trial's outcome -----------------------------------------------------------------
    def _tell(self, sweep: Sweep, trial: optuna.Trial, trial_id: int, ret: Any, crash: Optional[BaseException],
              last_error: str) -> TrialState:  # fmt: skip
        if ret is not None and getattr(ret, "hydra_cfg", None) is not None:
            trial.set_user_attr("run_dir", str(Path(ret.hydra_cfg.hydra.runtime.output_dir).resolve()))
        if self.interrupted:
            trial.set_user_attr("error", "interrupted (signal)")
            sweep.study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL
        frozen = sweep.storage.get_trial(trial_id)
        state, value, error = self._outcome(trial.number, frozen, ret, crash, last_error, sweep.study.direction)
        if state == TrialState.PRUNED:
            sweep.study.tell(trial, state=TrialState.PRUNED)
            log.info(f"Trial {trial.number} pruned: {frozen.user_attrs.get('pruned', '')}")
        elif state == TrialState.FAIL:
            trial.set_user_attr("error", error[:1000])
            sweep.study.tell(trial, state=TrialState.FAIL)
            log.warning(f"Trial {trial.number} failed: {error[:300]}")
        else:
            sweep.study.tell(trial, value)
            log.info(f"Trial {trial.number}: {self.config.metrics.monitor}={value:.5g}")
        return state

    def _outcome(self, number: int, frozen: optuna.trial.FrozenTrial, ret: Any, crash: Optional[BaseException],
                 last_error: str, direction: optuna.study.StudyDirection) -> tuple[TrialState, float, str]:  # fmt: skip
        """(state, objective value, error) of a launched trial."""
        if frozen.user_attrs.get("pruned"):  # the pruning callback's mark (ddp_spawn and others lose TrialPruned)
            return TrialState.PRUNED, NAN, ""
        if ret is None:  # no job return: the launch ended early
            if isinstance(crash, SystemExit):  # sumlab's one-line user errors exit instead of raising
                return TrialState.FAIL, NAN, last_error or f"exit code {crash.code}"
            return TrialState.FAIL, NAN, last_error or f"{type(crash).__name__}: {crash}"
        returned, ex = job_result(ret)
        if ex is not None:
            if isinstance(ex, optuna.TrialPruned) or "TrialPruned" in f"{type(ex).__name__}: {ex}":
                return TrialState.PRUNED, NAN, ""
            error = f"{type(ex).__name__}: {ex}"
            log.warning(f"Trial {number} failed: {error}\n" + "".join(traceback.format_exception(ex))[-3000:])
            return TrialState.FAIL, NAN, error
        try:
            value = float(returned)
        except (TypeError, ValueError):
            return TrialState.FAIL, NAN, f"the task returned {returned!r}, not a number"
        if not math.isfinite(value):  # e.g. a ddp_spawn run's metrics stayed in its ranks
            value = best_intermediate(frozen, direction)
            if not math.isfinite(value):
                return TrialState.FAIL, NAN, f"the objective ({self.config.metrics.monitor}) is not a finite number"
        return TrialState.COMPLETE, value, ""

    def _write(self, sweep: Sweep, plots: bool) -> None:
        try:
            write_sweep_results(sweep.study, self.sweep_dir, sweep.meta, plots=plots)
        except Exception as ex:  # results are a report: never lose the sweep over them
            log.warning(f"could not write sweep results: {type(ex).__name__}: {ex}")


def job_result(ret: Any) -> tuple[Any, Optional[Exception]]:
    """(the task's return value, None) for a completed Hydra job; (None, its exception) for a failed one."""
    try:
        return ret.return_value, None
    except Exception as ex:  # JobReturn.return_value re-raises the exception a failed job ended with
        return None, ex


def _finish_wandb() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
