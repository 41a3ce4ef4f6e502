"""`python -m sumlab.migrate`: old training configs (both layouts) and wandb sweep files become presets that compose,
validate and hold the old values; every old key is written, found equal, or listed as not mapped with a reason."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import CONF, ROOT, assert_one_line_error, run_cli, the_error_line
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sumlab.config.rules import validate
from sumlab.migrate.__main__ import main
from sumlab.migrate.keys import monitor_of
from sumlab.sweep.space import grid_values, params_to_arguments, parse_overrides

OLD = ROOT / "tests" / "data" / "migrate"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A copy of conf/: migrations write into it, never into the repository."""
    return Path(shutil.copytree(CONF, tmp_path / "conf"))


def migrate(conf: Path, old: Path, *args: str) -> Path:
    main([str(old), "--conf-dir", str(conf), *args])
    return conf


def composed(conf: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def old_keys(path: Path) -> list[str]:
    """Every leaf key of an old file, dotted."""

    def walk(node: dict, prefix: str) -> list[str]:
        out = []
        for key, value in node.items():
            out += walk(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"]
        return out

    return walk(yaml.safe_load(path.read_text(encoding="utf-8")), "")


def sweep_keys(path: Path) -> list[str]:
    """A sweep file's top-level keys and each parameter (nested ones dotted), as the migration names them."""

    def params(node: dict, prefix: str) -> list[str]:
        out = []
        for key, spec in node.items():
            nested = isinstance(spec, dict) and isinstance(spec.get("parameters"), dict)
            out += params(spec["parameters"], f"{prefix}{key}.") if nested else [f"parameters.{prefix}{key}"]
        return out

    old = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [k for k in old if k not in ("parameters", "metric", "early_terminate")] + params(old["parameters"], "")


def assert_every_old_key_accounted_for(keys: list[str], written: str) -> None:
    """Never dropped silently: each old key is named in the file, beside a value or in the closing lists."""
    missing = [key for key in keys if key not in written]
    assert not missing, missing


def test_sectioned_baseline_config(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = OLD / "kobart_baseline.yaml"
    migrate(conf, old)
    out = capsys.readouterr().out
    path = conf / "experiment" / "kobart_v3.yaml"  # the name comes from meta.experiment_name
    text = path.read_text(encoding="utf-8")
    cfg = composed(conf, "experiment=kobart_v3")
    validate(cfg)
    assert (cfg.model.name, cfg.model.name_or_path) == ("kobart_summarization", "digit82/kobart-summarization")
    assert (cfg.data.dir, cfg.data.train_file, cfg.data.validation_file, cfg.data.id_column) == (
        "../data/", "train.csv", "dev.csv", "fname",
    )  # fmt: skip
    assert (cfg.optim.lr, cfg.optim.scheduler, cfg.optim.warmup_ratio, cfg.optim.label_smoothing) == (
        1e-5, "cosine", 0.1, 0.1,
    )  # fmt: skip
    assert (cfg.data.batch_size, cfg.data.eval_batch_size, cfg.trainer.max_epochs) == (50, 32, 20)
    assert (cfg.trainer.precision, cfg.trainer.accelerator, list(cfg.trainer.devices)) == ("16-mixed", "gpu", [0])
    assert (cfg.generation.max_new_tokens, cfg.generation.no_repeat_ngram_size) == (99, 2)  # HF max_length=100
    assert cfg.metrics.tokenizer == "rouge_pkg" and list(cfg.metrics.remove_tokens) == ["<usr>", "<s>", "</s>", "<pad>"]
    assert (cfg.callbacks.model_checkpoint.save_top_k, cfg.callbacks.early_stopping.min_delta) == (5, 0.001)
    wandb = cfg.logger.wandb
    assert (wandb.project, wandb.entity, wandb.name, wandb.offline) == (
        "dialogue-summarization", "our-team", "kobart-v3-lr1e-5", True,
    )  # fmt: skip
    assert "<usr>" in cfg.data.special_token_pattern and cfg.qlora.method.value == "none"
    # each value names its old key; a changed meaning gets a note; only deltas are written
    assert "lr: 1.0e-05  # training.learning_rate" in text
    assert "HF's max_length=100 counts the decoder's start token" in text
    assert "weight_decay" not in OmegaConf.load(path).optim  # equal to the default: listed, not written
    assert "training.weight_decay: optim.weight_decay=0.01 already" in text
    assert "# meta.description: KoBART baseline" in text
    assert_every_old_key_accounted_for(old_keys(old), text)
    unmapped = ("general.output_dir=./outputs/kobart_v3: sumlab gives every run its own directory",
                "qlora.lora_rank=16: adapters are off", "inference.batch_size=32: predict.py's batch_size")  # fmt: skip
    for line in unmapped:  # on the terminal and in the file
        assert line in out and line.split(": ")[0] in text


def test_keys_at_other_depths_and_meanings_that_differ(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = OLD / "t5_nested.yaml"
    migrate(conf, old, "--name", "ke_t5")
    text = (conf / "experiment" / "ke_t5.yaml").read_text(encoding="utf-8")
    cfg = composed(conf, "experiment=ke_t5")
    validate(cfg)
    # no preset loads the team's checkpoint: the T5 preset (family, prefix, safe precisions) with it swapped in
    assert (cfg.model.name_or_path, cfg.model.prefix) == ("my-team/ke-t5-base-dialogue", "summarize: ")
    assert cfg.trainer.precision == "bf16-mixed" and "fp16 overflows" in text  # fp16 on T5 is refused
    assert cfg.trainer.max_epochs == 3 and "HF stops 2.5 epochs in" in text
    assert (cfg.trainer.val_check_interval, cfg.trainer.check_val_every_n_epoch) == (1000, None)  # 250 x 4 batches
    assert (cfg.generation.max_new_tokens, cfg.generation.num_beams, cfg.generation.length_penalty) == (79, 6, 1.2)
    assert (cfg.metrics.monitor, cfg.metrics.mode, list(cfg.optim.betas)) == ("val/rougeL", "max", [0.9, 0.98])
    assert list(cfg.logger) == ["tensorboard"] and (cfg.data.max_source_length, cfg.data.num_workers) == (768, 4)
    assert "train.args.some_custom_flag=true: unknown key" in capsys.readouterr().out
    assert "train.args.warmup_steps=500: sumlab warms up a fraction" in text  # no data here to count steps with
    assert_every_old_key_accounted_for(old_keys(old), text)


def test_warmup_steps_become_a_ratio_when_the_data_is_there(conf: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f'train_{i},"#Person1#: 안녕\n#Person2#: 네",요약 {i},인사\n' for i in range(100))
    (data / "train.csv").write_text("fname,dialogue,summary,topic\n" + rows, encoding="utf-8")
    old = {"general": {"data_path": str(data), "model_name": "gogamza/kobart-base-v2"},
           "training": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "num_train_epochs": 3,
                        "warmup_steps": 6, "warmup_ratio": 0.1}}  # fmt: skip
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old), encoding="utf-8")
    migrate(conf, tmp_path / "old.yaml")
    cfg = composed(conf, "experiment=old")
    steps = math.ceil(100 / 8) // 2 * 3  # 13 batches, 6 optimizer steps an epoch, 3 epochs
    assert cfg.optim.warmup_ratio == round(6 / steps, 4) and cfg.model.name == "kobart"
    text = (conf / "experiment" / "old.yaml").read_text(encoding="utf-8")
    assert "training.warmup_ratio=0.1: warmup_steps is set too, and wins in HF" in text


def test_qlora_llm_config(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    migrate(conf, OLD / "llm_qlora.yaml")
    cfg = composed(conf, "experiment=llm_qlora")
    validate(cfg)
    assert (cfg.model.name, cfg.qlora.method.value, cfg.qlora.r, cfg.qlora.alpha, cfg.qlora.dropout) == (
        "qwen2_5_1_5b_instruct", "qlora", 32, 64.0, 0.1,
    )  # fmt: skip
    assert list(cfg.qlora.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (cfg.qlora.compute_dtype, cfg.trainer.max_steps, cfg.trainer.max_epochs, cfg.seed) == (
        "bfloat16", 1200, None, 7,
    )  # fmt: skip
    assert (cfg.generation.max_new_tokens, cfg.generation.do_sample, cfg.logger.wandb.project) == (120, True, "llm-sum")
    out = capsys.readouterr().out
    assert "qlora.use_unsloth=true: unsloth is not supported" in out
    assert "training.lr_scheduler_type=cosine_with_min_lr" in out


def test_wandb_bayes_sweep_becomes_an_optuna_preset(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = OLD / "sweep_bayes.yaml"
    migrate(conf, old)
    cfg = composed(conf, "sweeper=kobart-lr-sweep")
    validate(cfg)
    sweeper = cfg.hydra.sweeper
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert (sweeper.pruner._target_, sweeper.pruner.min_resource, sweeper.pruner.reduction_factor) == (
        "optuna.pruners.HyperbandPruner", 3, 2,
    )  # fmt: skip
    assert (sweeper.direction, sweeper.n_trials, cfg.metrics.monitor) == ("max", 30, "val/rouge_combined")
    space, fixed = parse_overrides(params_to_arguments(sweeper.params))
    assert space["optim.lr"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert space["optim.warmup_ratio"] == FloatDistribution(0.0, 0.2)
    assert space["data.batch_size"] == CategoricalDistribution([16, 32, 50])
    assert space["generation.num_beams"] == IntDistribution(2, 6)
    assert space["optim.label_smoothing"] == FloatDistribution(0.0, 0.2, step=0.05)
    assert fixed == {"trainer.max_epochs": "10"}
    assert (cfg.logger.wandb.project, cfg.logger.wandb.entity) == ("dialogue-summarization", "our-team")
    out = capsys.readouterr().out
    assert "parameters.weight_decay: distribution normal" in out and "parameters.dropout_rate: no sumlab key" in out
    written = (conf / "sweeper" / "kobart-lr-sweep.yaml").read_text(encoding="utf-8")
    assert_every_old_key_accounted_for(sweep_keys(old) + ["metric.name", "metric.goal", "early_terminate"], written)


def test_wandb_grid_sweep_with_nested_parameters(conf: Path) -> None:
    migrate(conf, OLD / "sweep_grid.yaml", "--name", "grid")
    cfg = composed(conf, "sweeper=grid")
    sweeper = cfg.hydra.sweeper
    assert sweeper.sampler._target_ == "optuna.samplers.GridSampler" and sweeper.pruner._target_ is None
    assert (cfg.metrics.monitor, cfg.metrics.mode, sweeper.n_trials) == ("val/loss", "min", 12)  # 3 x 2 x 2 points
    space, _ = parse_overrides(params_to_arguments(sweeper.params))
    assert grid_values("optim.lr", space["optim.lr"]) == [1e-5, 3e-5, 5e-5]
    assert grid_values("m", space["generation.max_new_tokens"]) == [63, 99]  # HF max_length - 1
    assert space["optim.scheduler"] == CategoricalDistribution(["linear", "cosine"])


@pytest.mark.parametrize(
    ("old", "needle"),
    [
        ({"batch_size": 8}, "batch_size is ambiguous (training.batch_size or inference.batch_size?)"),
        ({"general": {"seed": 1}, "training": {"seed": 2}}, "general.seed=1 and training.seed=2 set the same thing"),
        ({"model_name": "someone/unknown-model"}, "cannot tell which kind of model someone/unknown-model is"),
        ({"training": {"warmup_ratio": 1.5}}, "does not validate: optim.warmup_ratio=1.5 must be in [0, 1)"),
        ({"training": {"num_train_epochs": "many"}}, "a value has the wrong type (could not convert string"),
        ({"training": {"num_beams": "four"}}, "does not compose"),
    ],
    ids=["ambiguous-name", "two-values", "unknown-model", "invalid-value", "wrong-type", "not-composing"],
)
def test_refusals_are_one_line_and_write_nothing(
    conf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], old: dict, needle: str
) -> None:
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old), encoding="utf-8")
    (conf / "experiment" / "old.yaml").write_text("# @package _global_\nseed: 3\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        migrate(conf, tmp_path / "old.yaml", "--force")
    assert exit_info.value.code == 2
    the_error_line(capsys.readouterr().err, needle)
    # the earlier file is intact, and no temporary file is left beside it
    assert (conf / "experiment" / "old.yaml").read_text(encoding="utf-8") == "# @package _global_\nseed: 3\n"
    assert sorted(p.name for p in (conf / "experiment").iterdir()) == sorted(
        [p.name for p in (CONF / "experiment").iterdir()] + ["old.yaml"]
    )


def test_an_existing_preset_needs_force(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        migrate(conf, OLD / "llm_qlora.yaml", "--name", "korean_dialogue_kobart")
    the_error_line(capsys.readouterr().err, "korean_dialogue_kobart.yaml exists: pass --force")
    migrate(conf, OLD / "llm_qlora.yaml", "--name", "korean_dialogue_kobart", "--force")
    assert composed(conf, "experiment=korean_dialogue_kobart").model.name == "qwen2_5_1_5b_instruct"


@pytest.mark.parametrize(
    ("content", "needle"),
    [("", "is empty"), ("training: [unclosed\n", "is not YAML (line 2)"), ("- a\n- b\n", "holds a list")],
    ids=["empty", "not-yaml", "not-a-mapping"],
)
def test_bad_input_is_one_line(
    conf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    (tmp_path / "old.yaml").write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        migrate(conf, tmp_path / "old.yaml")
    assert exit_info.value.code == 2
    the_error_line(capsys.readouterr().err, str(tmp_path / "old.yaml"), needle)


def test_command_line_refuses_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text("", encoding="utf-8")
    proc = run_cli("-m", "sumlab.migrate", str(tmp_path / "old.yaml"), "--conf-dir", str(tmp_path / "nope"))
    assert_one_line_error(proc, "no sumlab config directory")  # the conf directory is checked first
    proc = run_cli("-m", "sumlab.migrate", str(tmp_path / "old.yaml"))  # the repository's conf/: nothing written
    assert_one_line_error(proc, "is empty")


def test_metric_names() -> None:
    names = {"eval/rouge-1": "val/rouge1", "eval_rouge2": "val/rouge2", "eval/rougeL": "val/rougeL",
             "rouge_l_f": "val/rougeL", "eval_loss": "val/loss", "val/rouge_combined": "val/rouge_combined",
             "rougeLsum": "val/rougeLsum", "eval/rouge_sum": "val/rouge_combined"}  # fmt: skip
    assert {name: monitor_of(name) for name in names} == names
    assert monitor_of("eval/bleu") is None


def test_composed_values_are_plain_yaml(conf: Path) -> None:
    """The file is ordinary YAML Hydra reads (comments aside): no tags, no Python objects."""
    migrate(conf, OLD / "kobart_baseline.yaml")
    loaded = OmegaConf.load(conf / "experiment" / "kobart_v3.yaml")
    assert loaded.optim.lr == 1e-5 and loaded.defaults[0] == {"override /model": "kobart_summarization"}
