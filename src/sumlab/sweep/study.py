"""Storage and the trial loop behind the Hydra sweeper plugin (``hydra_plugins.sumlab_optuna_sweeper``).

One loop serves one worker; any number of workers (processes, machines) run the same loop on one
study. A worker asks for a trial only while fewer than ``n_trials`` trials are finished (COMPLETE or
PRUNED) or running, so the study ends with exactly ``n_trials`` finished trials however many workers
join, and re-running the same command after an interruption continues where it stopped.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import optuna
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from sumlab.core.errors import SumlabError
from sumlab.sweep import TRIAL_ENV, TrialRef, check_distributed, set_current_trial
from sumlab.sweep.pruning import best_intermediate
from sumlab.sweep.space import format_value, grid_values, params_to_arguments, parse_overrides

log = logging.getLogger(__name__)
# Heartbeats with ask/tell are what keep a killed worker's trial from blocking the study: not a mistake.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
warnings.filterwarnings("ignore", message="Argument ``heartbeat_interval`` is an experimental feature")
warnings.filterwarnings("ignore", message="Argument ``grace_period`` is an experimental feature")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
DB_NAME = "optuna.db"
WORKER_ENV = "SUMLAB_SWEEP_WORKER"  # worker index (make sweep sets it); seeds differ per worker
T = TypeVar("T")
DIRECTIONS = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}


# --- storage -------------------------------------------------------------------------------------
def default_storage(sweep_dir: str | Path) -> str:
    return f"sqlite:///{Path(sweep_dir).resolve() / DB_NAME}"


def resolve_storage(storage: Optional[str], sweep_dir: str | Path) -> str:
    return str(storage) if storage else default_storage(sweep_dir)


def _retrying(make: Callable[[], T]) -> T:
    """Workers starting together race to create the tables and the study: try again a few times."""
    for attempt in range(10):
        try:
            return make()
        except Exception:
            if attempt == 9:
                raise
            time.sleep(0.5 + attempt * 0.5)
    raise AssertionError("unreachable")


def open_storage(url: str, heartbeat_interval: Optional[int] = None, grace_period: Optional[int] = None) -> Any:
    """An RDB storage; SQLite waits for locks instead of failing when workers write at once."""
    if "://" not in url:
        raise SumlabError(f"hydra.sweeper.storage={url}: use an Optuna storage URL (sqlite:///path.db, postgresql://...)")
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 300}}
        Path(url.split(":///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    return _retrying(lambda: optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period
    ))


def open_study(storage: Any, study_name: str, direction: str) -> optuna.Study:
    study = _retrying(lambda: optuna.create_study(
        storage=storage, study_name=study_name, direction=direction, load_if_exists=True
    ))
    if study.direction.name.lower() != direction:
        raise SumlabError(
            f"study {study_name!r} in this storage optimizes {study.direction.name.lower()}, not {direction}: "
            "use another hydra.sweeper.study_name or the same direction"
        )
    return study


def build_pruner(conf: Optional[dict]) -> Any:
    """The configured pruner; every process reporting to the trial builds the same one."""
    if not conf or not conf.get("_target_"):
        return optuna.pruners.NopPruner()
    return instantiate(conf)


def count(study: optuna.Study) -> tuple[int, list[optuna.trial.FrozenTrial]]:
    """(finished trials, running trials)."""
    trials = study.get_trials(deepcopy=False)
    return sum(t.state in FINISHED for t in trials), [t for t in trials if t.state == TrialState.RUNNING]


class Heartbeat:
    """Records a running trial's heartbeat, so a killed worker's trial is failed after the grace period."""

    def __init__(self, storage: Any, trial_id: int, interval: Optional[int]) -> None:
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None
        if interval and hasattr(storage, "record_heartbeat"):
            storage.record_heartbeat(trial_id)

            def beat() -> None:
                while not self.stop.wait(interval):
                    try:
                        storage.record_heartbeat(trial_id)
                    except Exception:  # a busy database: try again next time
                        pass

            self.thread = threading.Thread(target=beat, daemon=True, name="sumlab-sweep-heartbeat")
            self.thread.start()

    def close(self) -> None:
        self.stop.set()


class ErrorTap:
    """Remembers the last one-line ``error: ...`` a trial printed (sumlab's user errors exit instead of raising)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.last = stream, ""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.startswith("error: "):
                self.last = line[len("error: "):]
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


# --- the loop ------------------------------------------------------------------------------------
class SweepLoop:
    def __init__(self, sweeper: Any, arguments: Sequence[str]) -> None:
        self.s = sweeper
        self.config: DictConfig = sweeper.config
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        self.arguments = list(arguments)
        self.interrupted = False

    # setup
    def _direction(self) -> str:
        direction = str(self.s.direction).lower().split(".")[-1]
        if direction not in DIRECTIONS:
            raise SumlabError(f"hydra.sweeper.direction={self.s.direction}: use maximize or minimize (max/min)")
        return DIRECTIONS[direction]

    def _sampler(self, space: dict[str, Any], n_existing: int) -> tuple[Any, Optional[int]]:
        conf = self.s.sampler
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
        conf = self.s.pruner
        return OmegaConf.to_container(conf, resolve=True) if OmegaConf.is_config(conf) else conf

    def _trial_overrides(self, trial: optuna.Trial, fixed: dict[str, str], study_name: str) -> list[str]:
        overrides = [f"{k}={v}" for k, v in fixed.items()]
        overrides += [f"{k}={format_value(v)}" for k, v in trial.params.items()]
        logger = self.config.get("logger") or {}
        if "wandb" in logger and logger.wandb is not None:  # one W&B run per trial, grouped by the sweep
            if logger.wandb.get("group") is None:
                overrides.append(f"logger.wandb.group={format_value(study_name)}")
            overrides.append(f"logger.wandb.name={format_value(f'{study_name}-trial{trial.number}')}")
        ref = f"{trial._trial_id}:{trial.number}:{study_name}"
        overrides.append(f"++hydra.job.env_set.{TRIAL_ENV}={format_value(ref)}")
        if self.s.n_jobs > 1:  # a batch's numbers need not be consecutive: name each directory by its trial
            overrides.append(f"hydra.sweep.subdir={trial.number}")
        return overrides

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def run(self) -> None:
        s = self.s
        check_distributed(self.config.trainer)
        if "LOCAL_RANK" in os.environ and os.environ["LOCAL_RANK"] != "0":
            raise SumlabError("a sweep must not start inside a distributed rank: use trainer.strategy=ddp_spawn in sweeps")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        space, fixed = parse_overrides(params_to_arguments(s.params) + self.arguments)
        for key in fixed:
            space.pop(key, None)
        direction = self._direction()
        study_name = str(s.study_name or "sumlab")
        url = resolve_storage(s.storage, self.sweep_dir)
        storage = open_storage(url, s.heartbeat_interval, s.grace_period)
        study = open_study(storage, study_name, direction)
        n_existing = len(study.get_trials(deepcopy=False))
        study.sampler, seed = self._sampler(space, n_existing)
        study.pruner = build_pruner(self._pruner_conf())
        n_trials = int(s.n_trials)
        if isinstance(study.sampler, optuna.samplers.GridSampler):
            grid = math.prod(len(grid_values(k, d)) for k, d in space.items())
            if grid < n_trials:
                log.info(f"Grid of {grid} points: n_trials {n_trials} -> {grid}")
                n_trials = grid
        if n_existing == 0:
            for params in s.enqueue_trials or []:
                study.enqueue_trial(OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params), skip_if_exists=True)
        extender: Optional[Callable[[DictConfig, optuna.Trial], None]] = get_method(s.custom_search_space) if s.custom_search_space else None
        log.info(f"Study {study_name} ({direction}) in {_redact(url)}: {n_trials} trials, sampler {type(study.sampler).__name__} "
                 f"(seed {seed}), pruner {type(study.pruner).__name__}, {n_existing} trials already there")  # fmt: skip
        log.info("Search space: " + ", ".join(f"{k}: {d}" for k, d in space.items()))
        meta = {"study_name": study_name, "storage": _redact(url), "direction": direction, "n_trials": n_trials,
                "sweep_dir": str(self.sweep_dir.resolve()), "monitor": str(self.config.metrics.monitor)}  # fmt: skip

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            for sig in previous:
                signal.signal(sig, self._on_signal)
        consecutive_failures = 0
        try:
            while True:
                finished, running = count(study)
                if finished >= n_trials:
                    break
                if finished + len(running) >= n_trials:  # the rest are running elsewhere: wait for them
                    optuna.storages.fail_stale_trials(study)
                    time.sleep(s.poll_seconds)
                    continue
                batch = self._ask(study, space, n_trials, extender)
                if not batch:
                    continue
                failed = self._run_batch(study, storage, batch, fixed, study_name, url)
                consecutive_failures = consecutive_failures + 1 if failed == len(batch) else 0
                if s.max_consecutive_failures and consecutive_failures >= s.max_consecutive_failures:
                    raise SumlabError(
                        f"{consecutive_failures} trials in a row failed (see trials.csv in {self.sweep_dir}): "
                        "fix the cause, then re-run the same command to continue the sweep"
                    )
                self._write(study, meta, plots=False)
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        self._write(study, meta, plots=not self.interrupted)
        if self.interrupted:
            finished, _ = count(study)
            sys.stderr.write(f"sweep interrupted: {finished} of {n_trials} trials finished; run the same command "
                             f"(same hydra.sweep.dir={self.sweep_dir}) to continue\n")  # fmt: skip
            sys.exit(130)

    def _ask(self, study: optuna.Study, space: dict[str, Any], n_trials: int, extender: Any) -> list[optuna.Trial]:
        batch = []
        for _ in range(max(1, int(self.s.n_jobs))):
            trial = study.ask(fixed_distributions=space)
            finished, running = count(study)
            numbers = sorted(t.number for t in running)
            # Two workers asked at once past n_trials: the later number gives way (recorded FAIL, not counted).
            if trial.number in numbers and numbers.index(trial.number) >= n_trials - finished:
                trial.set_user_attr("error", "surplus: n_trials were already finished or running")
                study.tell(trial, state=TrialState.FAIL)
                break
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            if extender is not None:
                extender(self.config, trial)
            batch.append(trial)
        return batch

    def _run_batch(self, study: optuna.Study, storage: Any, batch: list[optuna.Trial], fixed: dict[str, str], study_name: str, url: str) -> int:
        overrides = [self._trial_overrides(t, fixed, study_name) for t in batch]
        beats = [Heartbeat(storage, t._trial_id, self.s.heartbeat_interval) for t in batch]
        refs = [TrialRef(url, study_name, t._trial_id, t.number, self._pruner_conf()) for t in batch]
        set_current_trial(refs[0] if len(batch) == 1 else None)  # in-process launchers run one at a time
        tap = ErrorTap(sys.stderr)
        sys.stderr = tap
        returns: list[Any] = []
        crash: Optional[BaseException] = None
        try:
            for trial in batch:
                log.info(f"Trial {trial.number}: " + " ".join(f"{k}={format_value(v)}" for k, v in trial.params.items()))
            returns = list(self.s.launcher.launch(overrides, initial_job_idx=batch[0].number))
        except KeyboardInterrupt:
            self.interrupted = True
        except BaseException as ex:  # SystemExit from a refused config, or a launcher error
            crash = ex
        finally:
            sys.stderr = tap.stream
            set_current_trial(None)
            for b in beats:
                b.close()
            _finish_wandb()
        failed = 0
        for i, trial in enumerate(batch):
            ret = returns[i] if i < len(returns) else None
            state = self._tell(study, trial, ret, crash, tap.last)
            failed += state == TrialState.FAIL
        if self.interrupted:
            raise KeyboardInterrupt
        return failed

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any, crash: Optional[BaseException], last_error: str) -> TrialState:
        run_dir = None
        if ret is not None and getattr(ret, "hydra_cfg", None) is not None:
            run_dir = str(Path(ret.hydra_cfg.hydra.runtime.output_dir).resolve())
            trial.set_user_attr("run_dir", run_dir)
        frozen = study._storage.get_trial(trial._trial_id)
        if self.interrupted:
            trial.set_user_attr("error", "interrupted (signal)")
            study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL
        if frozen.user_attrs.get("pruned") or (ret is not None and _is_pruned(ret)):
            study.tell(trial, state=TrialState.PRUNED)
            log.info(f"Trial {trial.number} pruned: {frozen.user_attrs.get('pruned', '')}")
            return TrialState.PRUNED
        error = None
        value = float("nan")
        if ret is None:
            code = getattr(crash, "code", None)
            error = last_error or (f"exit code {code}" if isinstance(crash, SystemExit) else f"{type(crash).__name__}: {crash}")
        elif str(ret.status.name) != "COMPLETED":
            ex = ret._return_value
            error = f"{type(ex).__name__}: {ex}"
            log.warning(f"Trial {trial.number} failed: {error}\n" + "".join(traceback.format_exception(ex))[-3000:])
        else:
            try:
                value = float(ret.return_value)
            except (TypeError, ValueError):
                error = f"the task returned {ret.return_value!r}, not a number"
            if error is None and not math.isfinite(value):  # e.g. a ddp_spawn run's metrics stayed in its ranks
                value = best_intermediate(frozen, study.direction)
                if not math.isfinite(value):
                    error = f"the objective ({self.config.metrics.monitor}) is not a finite number"
        if error is not None:
            trial.set_user_attr("error", error[:1000])
            study.tell(trial, state=TrialState.FAIL)
            log.warning(f"Trial {trial.number} failed: {error[:300]}")
            return TrialState.FAIL
        study.tell(trial, value)
        log.info(f"Trial {trial.number}: {self.config.metrics.monitor}={value:.5g}")
        return TrialState.COMPLETE

    def _write(self, study: optuna.Study, meta: dict[str, Any], plots: bool) -> None:
        from sumlab.sweep.results import write_sweep_results

        try:
            write_sweep_results(study, self.sweep_dir, meta, plots=plots)
        except Exception as ex:  # results are a report: never lose the sweep over them
            log.warning(f"could not write sweep results: {type(ex).__name__}: {ex}")


def _is_pruned(ret: Any) -> bool:
    ex = getattr(ret, "_return_value", None)
    return isinstance(ex, optuna.TrialPruned) or "TrialPruned" in f"{type(ex).__name__}: {ex}"


def _finish_wandb() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _redact(url: str) -> str:
    """A storage URL without its password, for logs and summaries."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)
