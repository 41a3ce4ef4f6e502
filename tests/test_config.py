"""Every preset composes and validates; cross-field rules stop impossible runs before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONF, compose_config
from omegaconf import OmegaConf

from sumlab.config.rules import validate
from sumlab.core.errors import SumlabError

GROUPS = ["model", "data", "trainer", "logger", "callbacks", "generation", "experiment", "paths", "qlora", "sweeper"]
PRESETS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_every_group_has_presets() -> None:
    found = {g for g, _ in PRESETS}
    assert found == set(GROUPS)


@pytest.mark.parametrize(("group", "preset"), PRESETS, ids=[f"{g}={p}" for g, p in PRESETS])
def test_preset_composes_and_validates(group: str, preset: str, tmp_path) -> None:
    cfg = compose_config([f"{group}={preset}"], run_dir=tmp_path)
    validate(cfg)
    resolved = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in cfg.items()
        if k != "hydra"
    }  # every interpolation resolves
    assert resolved["paths"]["run_dir"] == str(tmp_path)
    assert resolved["model"]["name"] and resolved["data"]["name"]
    if group == "model":
        assert resolved["model"]["name"] == preset


def test_model_presets_know_their_family_and_recipe(tmp_path) -> None:
    t5 = compose_config(["model=t5_base"], run_dir=tmp_path)
    assert (t5.model.prefix, t5.optim.lr, t5.optim.scheduler) == ("summarize: ", 3e-4, "linear")
    bart = compose_config(["model=bart_large_cnn"], run_dir=tmp_path)
    assert (bart.model.prefix, bart.optim.lr, bart.optim.scheduler) == ("", 5e-5, "linear")
    gpt = compose_config(["model=kogpt2"], run_dir=tmp_path)
    assert (gpt.model.family.value, gpt.optim.lr, gpt.optim.scheduler) == ("causal", 5e-5, "cosine")


def test_experiment_changes_only_deltas(tmp_path) -> None:
    base = compose_config([], run_dir=tmp_path)
    exp = compose_config(["experiment=korean_dialogue_kobart"], run_dir=tmp_path)
    assert exp.model.name_or_path == "gogamza/kobart-base-v2" and exp.data.id_column == "fname"
    assert exp.metrics.tokenizer == "kiwi"
    assert exp.optim.weight_decay == base.optim.weight_decay  # untouched keys keep their defaults


@pytest.mark.parametrize("model", ["t5_base", "mt5_small", "pegasus_xsum", "tiny_t5"])
def test_fp16_with_t5_family_is_refused_with_bf16_hint(model: str, tmp_path) -> None:
    cfg = compose_config([f"model={model}", "trainer.precision=16-mixed"], run_dir=tmp_path)
    with pytest.raises(SumlabError, match="bf16-mixed"):
        validate(cfg)


def test_fp16_allowed_for_bart(tmp_path) -> None:
    validate(compose_config(["model=bart_base", "trainer.precision=16-mixed"], run_dir=tmp_path))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optim.warmup_ratio=1.5", "optim.warmup_ratio"),
        ("metrics.tokenizer=nope", "metrics.tokenizer"),
        ("metrics.monitor=val/rouge3", "metrics.monitor"),
        ("data.batch_size=0", "data.batch_size"),
        ("generation.min_new_tokens=500", "generation.min_new_tokens"),
    ],
)
def test_cross_field_rules(override: str, needle: str, tmp_path) -> None:
    with pytest.raises(SumlabError, match=needle.replace(".", r"\.")):
        validate(compose_config([override], run_dir=tmp_path))


def test_schema_rejects_wrong_type_and_unknown_key(tmp_path) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_config(["trainer.max_epochs=abc"], run_dir=tmp_path)
    with pytest.raises(ConfigCompositionException):
        compose_config(["model.not_a_key=1"], run_dir=tmp_path)
    # `+` opens the node while composing: the run's own schema check still names the key.
    with pytest.raises(SumlabError, match=r"trainer\.foo"):
        validate(compose_config(["+trainer.foo=1"], run_dir=tmp_path))


def test_run_directories_unique_within_one_second(tmp_path) -> None:
    dirs = {compose_config([], run_dir=tmp_path).hydra.run.dir for _ in range(3)}
    assert len(dirs) == 3  # same second, same process: the uid part still differs


def test_secrets_redacted_but_tokenizer_keys_kept(tmp_path) -> None:
    from sumlab.train.rundir import SECRET_LINE

    text = (
        "metrics:\n  tokenizer: kiwi\n  max_new_tokens: 64\nenv_set:\n  HF_TOKEN: hf_abc\n"
        "- +hydra.job.env_set.WANDB_API_KEY=sk-1\n"
    )
    out = SECRET_LINE.sub(r"\1'***'", text)
    assert "tokenizer: kiwi" in out and "max_new_tokens: 64" in out
    assert "hf_abc" not in out and "sk-1" not in out


def test_outputs_get_the_permissions_of_a_plain_file(tmp_path: Path) -> None:
    """Atomic writes and temp-then-rename directories must not keep mkstemp's private 0600/0700 modes."""
    import os

    from sumlab.core.io import temp_dir, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        built = temp_dir(tmp_path / "cache", ".tmp-")
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
    assert built.stat().st_mode & 0o777 == 0o755
