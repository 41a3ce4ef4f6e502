"""Real sweeps of the tiny default (and tiny_llama with LoRA) on synthetic data, through `python train.py -m` (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.synthetic_sizes={train:32,validation:8,test:8}",
    "data.max_source_length=64",
    "data.max_target_length=16",
    "model.tiny.d_model=32",
    "model.tiny.d_ff=64",
    "model.tiny.num_layers=1",
    "model.tiny.num_heads=2",
    "trainer.max_epochs=1",
    "test=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "generation=greedy",
    "generation.max_new_tokens=8",
    "export=false",
]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def sweep_cmd(sweep_dir: Path, *extra: str, study: str = "t", n_trials: int = 4) -> list[str]:
    return [
        sys.executable, "train.py", "-m", "sweeper=hyperparameter_sweep",
        f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={n_trials}",
        "hydra/sweeper/sampler=random", "hydra/sweeper/pruner=none", "hydra.sweeper.poll_seconds=0.5",
        "optim.lr=tag(log, interval(1e-4, 1e-2))", "data.batch_size=choice(8, 16)",
        "optim.label_smoothing=0.0", "optim.weight_decay=0.01", "trainer.accumulate_grad_batches=1",
        "generation.num_beams=1", "optim.warmup_ratio=0.0",
        *TINY, *extra,
    ]  # fmt: skip


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SUMLAB_OUTPUT_DIR": str(tmp_path / "outputs"),
            "SUMLAB_SWEEP_DIR": str(tmp_path / "multirun"), "PYTHONPATH": str(ROOT / "tests"),
            "WANDB_MODE": "disabled", **extra}  # fmt: skip


def run(cmd: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env(tmp_path, **extra), capture_output=True, text=True, timeout=400)


def load(sweep_dir: Path, study: str = "t") -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state in FINISHED]


def test_a_signal_between_ask_and_tell_leaves_no_trial_running(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    cmd = sweep_cmd(sweep_dir, "hydra.sweeper.custom_search_space=sweep_probe.interrupt_second_ask")
    done = run(cmd, tmp_path)
    assert done.returncode == 130 and "sweep interrupted: 1 of 4 trials finished" in done.stderr, done.stderr[-3000:]
    trials = load(sweep_dir).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].user_attrs["error"] == "interrupted (signal)"


def test_interrupted_sweep_resumes_to_n_trials_and_writes_results(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    cmd = sweep_cmd(sweep_dir, n_trials=4)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    db = sweep_dir / "optuna.db"
    while time.monotonic() < deadline and proc.poll() is None:  # interrupt once one trial finished
        if db.exists():
            try:
                if len(finished(load(sweep_dir))) >= 1:
                    break
            except Exception:
                pass
        time.sleep(0.5)
    assert proc.poll() is None, "the sweep ended before it could be interrupted:\n" + proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "sweep interrupted" in out
    first = load(sweep_dir).get_trials()
    assert 1 <= len([t for t in first if t.state in FINISHED]) < 4
    assert all(t.state != TrialState.RUNNING for t in first)  # the interrupted trial is recorded, not left running

    again = run(cmd, tmp_path)  # the same command continues the study
    assert again.returncode == 0, again.stderr[-3000:]
    study = load(sweep_dir)
    done = finished(study)
    assert len(done) == 4
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers))
    points = [tuple(sorted(t.params.items())) for t in done]
    assert len(points) == len(set(points)), "a resumed sweep replayed a point"

    check_results(sweep_dir, study, done)
    check_leaderboard_and_notebook(tmp_path, sweep_dir, study, done)


def check_results(sweep_dir: Path, study: optuna.Study, done: list[optuna.trial.FrozenTrial]) -> None:
    """sweep_summary.json, trials.csv, plots/ and one directory per trial."""
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["best"]["number"] == study.best_trial.number
    assert summary["best"]["value"] == pytest.approx(study.best_value)
    assert Path(summary["best"]["run_dir"]).is_dir()
    assert summary["trials"]["COMPLETE"] == 4
    lines = (sweep_dir / "trials.csv").read_text().splitlines()
    assert len(lines) == 1 + len(study.get_trials())
    assert "param.optim.lr" in lines[0] and "run_dir" in lines[0] and "duration_s" in lines[0]
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        for ext in ("png", "html"):
            plot = sweep_dir / "plots" / f"{name}.{ext}"
            assert plot.is_file() and plot.stat().st_size > 1000, plot
    for t in done:  # each trial ran in its own directory, named by its number, with its parameters
        cfg = (Path(t.user_attrs["run_dir"]) / ".hydra" / "config.yaml").read_text()
        assert Path(t.user_attrs["run_dir"]).name == str(t.number)
        assert f"batch_size: {t.params['data.batch_size']}" in cfg


def check_leaderboard_and_notebook(tmp_path: Path, sweep_dir: Path, study: optuna.Study,
                                   done: list[optuna.trial.FrozenTrial]) -> None:  # fmt: skip
    """The leaderboard over every run, and the notebook on this sweep's output."""
    board = run([sys.executable, "-m", "sumlab.sweep.results", str(tmp_path / "multirun"), str(sweep_dir),
                 "--out", str(tmp_path)], tmp_path)  # fmt: skip
    assert board.returncode == 0, board.stderr
    board_text = (tmp_path / "leaderboard.csv").read_text()
    assert all(t.user_attrs["run_dir"] in board_text for t in done)  # every finished trial is on the board
    assert (tmp_path / "leaderboard.md").read_text().count("\n| ") >= 4

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "sweep_analysis.ipynb", as_version=4)
    os.environ["SUMLAB_SWEEP_ANALYSIS_DIR"] = str(sweep_dir)
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        os.environ.pop("SUMLAB_SWEEP_ANALYSIS_DIR", None)
    text = json.dumps(nb)
    assert "error" not in [o.get("output_type") for c in nb.cells for o in c.get("outputs", [])]
    assert f"best trial: {study.best_trial.number}" in text


def test_two_workers_share_one_study(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    cmd = sweep_cmd(sweep_dir, n_trials=4, study="shared")
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env(tmp_path, SUMLAB_SWEEP_WORKER=str(i)), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    study = load(sweep_dir, "shared")
    done = finished(study)
    assert len(done) == 4
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers))
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2, workers
    by_worker = {w: [t for t in done if t.user_attrs["worker"] == w] for w in workers}
    a, b = by_worker.values()
    overlap = any(x.datetime_start < y.datetime_complete and y.datetime_start < x.datetime_complete
                  for x in a for y in b)  # fmt: skip
    assert overlap, "the two workers never ran trials at the same time"
    assert len({t.user_attrs["run_dir"] for t in done}) == 4


def test_bad_trial_is_pruned_and_crashing_trial_fails(tmp_path: Path) -> None:
    """A trial whose training raises fails with the exception; one whose config a rule refuses (sumlab's one-line
    error, exit 2, no exception) fails with that line; a diverging one is pruned; the sweep goes on."""
    sweep_dir = tmp_path / "sweep"
    cmd = [
        sys.executable, "train.py", "-m", "sweeper=hyperparameter_sweep",
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.study_name=prune", "hydra.sweeper.n_trials=2",
        "hydra/sweeper/sampler=random", "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0",
        "metrics.monitor=val/loss", "metrics.mode=min",
        "optim.lr=tag(log, interval(1e-4, 1e4))", "optim.scheduler=choice(linear, no_such_schedule)",
        "optim.warmup_ratio=choice(0.0, 1.5)",
        "hydra.sweeper.enqueue_trials=[{optim.lr:0.002,optim.scheduler:linear,optim.warmup_ratio:0.0},"
        "{optim.lr:0.002,optim.scheduler:no_such_schedule,optim.warmup_ratio:0.0},"
        "{optim.lr:0.002,optim.scheduler:linear,optim.warmup_ratio:1.5},"
        "{optim.lr:5000.0,optim.scheduler:linear,optim.warmup_ratio:0.0}]",
        "data.batch_size=8", "optim.label_smoothing=0.0", "optim.weight_decay=0.0", "trainer.accumulate_grad_batches=1",
        "generation.num_beams=1", *TINY, "trainer.max_epochs=3",
    ]  # fmt: skip
    result = run(cmd, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load(sweep_dir, "prune").get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.PRUNED], [
        (t.number, t.state, t.params) for t in trials
    ]
    assert "no_such_schedule" in trials[1].user_attrs["error"]
    assert trials[2].user_attrs["error"] == "optim.warmup_ratio=1.5 must be in [0, 1)"  # the line the trial reported
    assert "error: optim.warmup_ratio=1.5 must be in [0, 1)" in result.stderr
    pruned = trials[3]
    assert len(pruned.intermediate_values) < 3  # stopped before its last epoch
    assert json.loads((Path(pruned.user_attrs["run_dir"]) / "run.json").read_text())["status"] == "pruned"
    csv = (sweep_dir / "trials.csv").read_text()
    assert "PRUNED" in csv and "FAIL" in csv


def test_ddp_in_a_sweep_is_refused(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run(sweep_cmd(sweep_dir, "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"), tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trainer.strategy=ddp_spawn" in errors[0], result.stderr[-2000:]
    assert not (sweep_dir / "0").exists()  # refused before any trial started


def test_ddp_spawn_ranks_train_with_the_trials_hyperparameters(tmp_path: Path) -> None:
    """One trial, two spawned ranks, one batch each: every rank trains with the trial's sampled learning rate."""
    sweep_dir = tmp_path / "sweep"
    cmd = sweep_cmd(
        sweep_dir, "trainer.strategy=ddp_spawn", "trainer.devices=2", "trainer.accelerator=cpu",
        "+callbacks.rank_probe._target_=sweep_probe.RankProbe", "+callbacks.rank_probe.out_dir=${paths.run_dir}/probe",
        "data.synthetic_sizes={train:4,validation:2,test:2}", "data.batch_size=2", "generation.max_new_tokens=2",
        "test=false", "trainer.max_epochs=1", study="ddp", n_trials=1,
    )  # fmt: skip
    result = run(cmd, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = load(sweep_dir, "ddp").get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    probe_dir = Path(trial.user_attrs["run_dir"]) / "probe"
    probes = [json.loads(p.read_text()) for p in sorted(probe_dir.glob("rank*.json"))]
    assert [p["rank"] for p in probes] == [0, 1] and probes[0]["pid"] != probes[1]["pid"]
    for p in probes:
        assert p["world_size"] == 2
        assert p["lr"] == pytest.approx(trial.params["optim.lr"])
        assert p["optim"] == probes[0]["optim"]


def test_tiny_llama_lora_sweep_exports_its_best_trial(tmp_path: Path) -> None:
    """The competition recipe's path offline: chat-template LLM + LoRA through an Optuna sweep, best model exported."""
    sweep_dir = tmp_path / "sweep"
    cmd = sweep_cmd(sweep_dir, "model=tiny_llama", "qlora=lora", "data.max_source_length=128", "export=true",
                    "data.synthetic_sizes={train:16,validation:4,test:4}", "model.tiny.vocab_size=400",
                    "qlora.r=4", "metrics.monitor=val/loss", "metrics.mode=min", study="llm", n_trials=2)  # fmt: skip
    result = run(cmd, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(sweep_dir, "llm")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [(t.number, t.state, t.user_attrs) for t in trials]
    assert all(isinstance(t.value, float) for t in trials)  # val/loss: the two learning rates give two values
    best = min(trials, key=lambda t: t.value)

    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["trials"]["COMPLETE"] == 2
    assert summary["best"]["number"] == study.best_trial.number == best.number
    assert summary["best"]["value"] == pytest.approx(best.value)
    assert "val_rouge_combined" in summary["best"]["metrics"]  # validation generated with the chat prompt
    lines = (sweep_dir / "trials.csv").read_text().splitlines()
    assert len(lines) == 3 and all(t.user_attrs["run_dir"] in "\n".join(lines) for t in trials)
    export = Path(summary["best"]["export_dir"])  # the merged model a user predicts with, and its adapter
    assert export.parent == Path(summary["best"]["run_dir"])
    assert (export / "config.json").is_file() and (export / "tokenizer_config.json").is_file()
    assert (export / "adapter" / "adapter_config.json").is_file()
    assert json.loads((export / "config.json").read_text())["model_type"] == "llama"
