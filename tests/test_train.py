"""End-to-end training: the offline default learns; every tiny family trains, exports and reloads;
resume continues; DDP scores each example once; no secret reaches a run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from conftest import TINY_RUN, compose_config, epoch_tokens, run_cli, train_in_process
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from sumlab.config.schema import enum_value
from sumlab.data.sources import load_split
from sumlab.family import decode, make_family
from sumlab.train.runner import build_module, load_splits

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # `make train` in a fixture
SECRETS = {"WANDB_API_KEY": "sk-wandb-secret-0123456789", "HF_TOKEN": "hf_secret_token_0123456789"}


def _validate(module, datamodule) -> dict[str, float]:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return module.val_history[-1]


def _load_best(cfg, run_dir: Path):
    """A fresh module built from the run's config, holding the best checkpoint's weights."""
    L.seed_everything(cfg.seed)
    splits = load_splits(cfg)
    module, datamodule, _ = build_module(cfg, splits)
    best = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    module.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    return module, datamodule


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    """`make train`'s settings exactly (the default config), with secrets in the environment."""
    run_dir = tmp_path_factory.mktemp("default") / "run"
    proc = run_cli("train.py", f"hydra.run.dir={run_dir}",
                   "+hydra.job.env_set.WANDB_API_KEY=" + SECRETS["WANDB_API_KEY"],
                   env={**SECRETS, "WANDB_MODE": "offline"}, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run directory" in proc.stdout and "rouge_combined" in proc.stdout  # the summary table
    return run_dir


def test_offline_default_learns(default_run: Path, tmp_path: Path) -> None:
    metrics = json.loads((default_run / "metrics.json").read_text())
    cfg = compose_config([], run_dir=tmp_path)
    L.seed_everything(cfg.seed)
    module, datamodule, _ = build_module(cfg, load_splits(cfg))
    untrained = _validate(module, datamodule)["rougeL"]
    trained = metrics["validation"]["rougeL"]
    print(f"validation ROUGE-L: untrained {untrained:.4f}, trained {trained:.4f}")
    assert trained > untrained + 0.3, (untrained, trained)
    assert metrics["test"]["rougeL"] > untrained + 0.3
    assert 5 < metrics["validation"]["gen_len"] < 60


def test_metrics_json_and_run_directory(default_run: Path, tmp_path: Path) -> None:
    metrics = json.loads((default_run / "metrics.json").read_text())
    for split in ("validation", "test"):
        m = metrics[split]
        assert m["rouge_combined"] == pytest.approx((m["rouge1"] + m["rouge2"] + m["rougeL"]) / 3)
        assert 0 < m["rouge2"] < m["rouge1"] <= 1 and 0 < m["rougeL"] <= m["rouge1"] and 0 < m["rougeLsum"] <= 1
    history = torch.load(default_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    best = max(history["sumlab_val_history"], key=lambda v: v["rouge_combined"])  # metrics.monitor, mode max
    assert metrics["validation"] == best  # the validation of the exported (best) checkpoint
    # every epoch trained counts each example's real tokens once; the rate and the wall clock follow from them
    tokens, batches = epoch_tokens(compose_config([], run_dir=tmp_path))
    epochs, rest = divmod(metrics["global_step"], batches)
    assert rest == 0 and best["epoch"] < epochs <= 5  # whole epochs (early stopping may end the run sooner)
    assert metrics["train_tokens"] == tokens * epochs
    assert metrics["train_tokens_per_second"] == pytest.approx(metrics["train_tokens"] / metrics["train_seconds"], 1e-3)
    assert metrics["wall_seconds"] > metrics["train_seconds"]
    assert {"torch", "transformers", "lightning"} <= set(metrics["versions"])
    assert json.loads((default_run / "run.json").read_text())["status"] == "completed"
    assert (default_run / ".hydra" / "config.yaml").is_file()
    assert sorted(p.name for p in (default_run / "checkpoints").glob("*.ckpt"))[-1] == "last.ckpt"
    assert Path(metrics["best_checkpoint"]).is_file()


def test_no_secret_in_run_directory(default_run: Path) -> None:
    for path in default_run.rglob("*"):
        if path.is_file() and path.suffix != ".ckpt" and path.stat().st_size < 5_000_000:
            text = path.read_bytes().decode("utf-8", "replace")
            for secret in SECRETS.values():
                assert secret not in text, path


@pytest.mark.parametrize("model", ["tiny_t5", "tiny_bart", "tiny_gpt2"])
def test_tiny_family_trains_exports_and_reloads(model: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # min_new_tokens: a barely trained model may emit EOS at once, and "" == "" would prove nothing
    _, cfg = train_in_process(
        [f"model={model}", *TINY_RUN, "trainer.max_epochs=2", "generation.min_new_tokens=4"], run_dir
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 2 * 8 and metrics["validation"]["num_examples"] == 9

    module, datamodule = _load_best(cfg, run_dir)
    module.eval()
    batch = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        expected, _ = module.generate(batch)

    auto = AutoModelForCausalLM if enum_value(cfg.model.family) == "causal" else AutoModelForSeq2SeqLM
    reloaded = auto.from_pretrained(run_dir / "export").eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "export")
    assert reloaded.generation_config.num_beams == cfg.generation.num_beams
    assert reloaded.generation_config.max_new_tokens == cfg.generation.max_new_tokens
    family = make_family(enum_value(cfg.model.family), tokenizer, cfg.model.prefix, cfg.model.separator)
    rows = [
        {"idx": i, **family.features(e["text"], None, cfg.data.max_source_length, 8)}
        for i, e in enumerate(load_split(cfg.data, "validation", seed=cfg.seed)[: batch["idx"].numel()])
    ]
    with torch.no_grad():
        got = decode(tokenizer, family.generate(reloaded, family.collate(rows), reloaded.generation_config))
    assert got == expected
    assert all(text for text in got)


def test_pretrained_model_fine_tunes_in_train_mode(tmp_path: Path) -> None:
    # from_pretrained returns eval mode (dropout off); Lightning would keep it so for the whole fit
    cfg = compose_config(TINY_RUN, run_dir=tmp_path)
    module, _, _ = build_module(cfg, load_splits(cfg))
    module.model.save_pretrained(tmp_path / "local")
    module.tokenizer.save_pretrained(tmp_path / "local")
    cfg = compose_config([*TINY_RUN, f"model.name_or_path={tmp_path / 'local'}", "model.tiny=null"], run_dir=tmp_path)
    module, _, _ = build_module(cfg, load_splits(cfg))
    assert all(m.training for m in module.model.modules())


def test_resume_last_continues_step_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = Path(os.environ["SUMLAB_OUTPUT_DIR"]) / "train"
    first_dir, second_dir = out / f"{tmp_path.name}-a", out / f"{tmp_path.name}-b"
    overrides = [*TINY_RUN, "seed=7"]  # a config no other test trains, so `last` is this test's run
    train_in_process(overrides, first_dir)
    first = json.loads((first_dir / "metrics.json").read_text())
    train_in_process([*overrides, "ckpt_path=last", "trainer.max_epochs=2"], second_dir)
    second = json.loads((second_dir / "metrics.json").read_text())
    assert second["resumed_from"] == str(first_dir / "checkpoints" / "last.ckpt")
    assert second["global_step"] == 2 * first["global_step"]
    # the validation reported is that of the checkpoint this run exports: its own epoch, not the first run's
    assert second["validation"]["epoch"] == 1 and Path(second["best_checkpoint"]).parent == second_dir / "checkpoints"

    # the same checkpoint under another architecture: one clear line, exit 2, before any training
    with pytest.raises(SystemExit) as stop:
        train_in_process(
            [*overrides, "model=tiny_bart", f"ckpt_path={second['resumed_from']}"], out / f"{tmp_path.name}-c"
        )
    assert stop.value.code == 2
    assert "holds a different model than this run's BartForConditionalGeneration" in capsys.readouterr().err


def test_last_checkpoint_is_the_last_epoch_without_a_new_best(tmp_path: Path) -> None:
    # Lightning 2.6's save_last writes last.ckpt only beside a new best; ckpt_path=last must resume from the end.
    # Maximizing val/loss while it falls keeps the best at epoch 0.
    run_dir = tmp_path / "last"
    train_in_process(
        [*TINY_RUN, "trainer.max_epochs=3", "metrics.monitor=val/loss", "metrics.mode=max", "test=false"], run_dir
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation"]["epoch"] == 0 and metrics["global_step"] == 3 * 8
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == metrics["global_step"] and last["epoch"] == 2


def test_training_without_validation_exports_last_epoch(tmp_path: Path) -> None:
    # limit_val_batches=0 (a quick timing or smoke run): early stopping has nothing to watch and must not crash
    run_dir = tmp_path / "noval"
    train_in_process([*TINY_RUN, "trainer.limit_val_batches=0", "test=false"], run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation"] == {} and metrics["global_step"] == 8
    assert Path(metrics["best_checkpoint"]).is_file() and (run_dir / "export" / "config.json").is_file()


def test_ddp_two_processes_score_each_example_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    overrides = [*TINY_RUN, "data.eval_batch_size=1"]  # 9 validation examples: rank 1 gets a repeat
    proc = run_cli("train.py", *overrides, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                   f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}", timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one process tokenized each split while the other waited; both then memory-mapped the same files
    for split in ("train", "validation", "test"):
        assert proc.stdout.count(f"data: tokenized {split} ") == 1, proc.stdout[-3000:]
    assert len(list((tmp_path / "cache" / "data").glob("*-train-*"))) == 1
    ddp = json.loads((run_dir / "metrics.json").read_text())["validation"]
    assert ddp["num_examples"] == 9
    # test_predictions.jsonl: both ranks' shards merged, rank 1's repeated batch dropped, in dataset order
    tested = [json.loads(line)["id"] for line in (run_dir / "test_predictions.jsonl").read_text().splitlines()]
    assert tested == [f"synthetic_test_{i:05d}" for i in range(5)]

    cfg = compose_config(overrides, run_dir=tmp_path / "single")
    module, datamodule = _load_best(cfg, run_dir)
    single = _validate(module, datamodule)
    assert single["num_examples"] == 9
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len"):
        assert single[key] == pytest.approx(ddp[key], abs=1e-9), key
    assert single["loss"] == pytest.approx(ddp["loss"], rel=1e-6)  # rank 1's repeated batch not counted twice


def test_streaming_run_validates_every_n_steps_with_the_default_callbacks(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """data.streaming=true with a validation file, trainer.max_steps and no epoch limit, the default callbacks
    (early stopping and the best checkpoint on val/rouge_combined): a stream's epoch has no end before max_steps,
    so validation runs every max_steps/5 batches instead of never (Lightning failed after training)."""
    from sumlab.data import synthetic

    for split, n in (("train", 30), ("validation", 4)):  # 30 rows: 15 batches of 2, more than the 10 steps
        rows = synthetic.generate_split(split, n, 42)
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run_dir = tmp_path / "stream"
    train_in_process([*TINY_RUN, "data=files", f"data.dir={tmp_path}", "data.train_file=train.jsonl",
                      "data.validation_file=validation.jsonl", "data.streaming=true", "data.batch_size=2",
                      "trainer.max_steps=10", "trainer.max_epochs=null", "export=false"], run_dir)  # fmt: skip
    assert "validating every 2 training batches (trainer.val_check_interval=2" in capsys.readouterr().err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    steps = [v["step"] for v in history["sumlab_val_history"]]
    assert len(steps) >= 3 and steps == list(range(2, 2 * len(steps) + 1, 2))  # every 2 steps, from step 2 on
    assert metrics["validation"]["step"] in steps and metrics["validation"]["num_examples"] == 4
    assert metrics["global_step"] == steps[-1] <= 10  # the run ends on a validation (at 10, or early stopping's)
