"""CTranslate2 backend: fp32 outputs equal transformers', the conversion cache, auto fallback and errors."""

from __future__ import annotations

import errno
import json
import signal
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ctranslate2  # noqa: F401  (a hard dependency and the default engine: a broken install must fail here)
import pytest
import torch
from conftest import run_cli
from omegaconf import OmegaConf
from test_predict import _fails, make_run, predict_here, synthetic_ids

from sumlab.generation import engines as backends
from sumlab.predict.writer import read_predictions

OVERRIDES = OmegaConf.create(
    {"family": None, "prefix": None, "separator": None, "revision": None, "trust_remote_code": False}
)
SETTINGS = {  # (name, generation keys over the beam4 defaults)
    "greedy": {"num_beams": 1},
    "beam4": {},
    "beam4-short": {"length_penalty": 0.6},
    "beam4-long": {"length_penalty": 2.0},
    # seq2seq only: with beams, or for causal models, these fall back to hf (see ct2_unsupported)
    "greedy-penalties": {"num_beams": 1, "no_repeat_ngram_size": 3, "repetition_penalty": 1.3, "min_new_tokens": 6},
}


@pytest.fixture(scope="module", params=["t5", "bart", "gpt2"])
def arch_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return request.param, make_run(tmp_path_factory.mktemp(f"{request.param}run"), request.param)


def _generation(**keys: object) -> object:
    base = {"num_beams": 4, "max_new_tokens": 20, "min_new_tokens": 0, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
            "repetition_penalty": 1.0, "early_stopping": True, "do_sample": False, "top_k": 50, "top_p": 1.0,
            "temperature": 1.0}  # fmt: skip
    return OmegaConf.create({**base, **keys})


@pytest.mark.slow
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_ctranslate2_fp32_equals_hf(arch_run: tuple[str, Path], setting: str, tmp_path: Path) -> None:
    """Same ids in (T5 prefix, added tag tokens, causal prompt + separator), same text out, batch by batch."""
    from sumlab.data import synthetic
    from sumlab.family import make_family
    from sumlab.generation.config import build_generation_config
    from sumlab.models.loading import load

    arch, run = arch_run
    if arch == "gpt2" and setting == "greedy-penalties":
        pytest.skip("no_repeat_ngram_size/repetition_penalty count the prompt in HF: causal models fall back to hf")
    loaded = load(str(run), OVERRIDES, str(tmp_path))
    family = make_family(loaded.family, loaded.tokenizer, loaded.prefix, loaded.separator)
    # dialogues and, as inputs of another kind and length, summaries: tiny BART's greedy search says one thing
    # to every dialogue, and equal outputs for all inputs would prove nothing about the ids going in
    rows = synthetic.generate_split("test", 8, 42)
    feats = [family.features(text, None, 192, 48) for r in rows for text in (r["dialogue"], r["summary"])]
    key = "input_ids" if "input_ids" in feats[0] else "prompt_ids"
    tag_ids = set(loaded.tokenizer.convert_tokens_to_ids(["#Person1#", "#Person2#"]))
    assert len(tag_ids) == 2 and all(tag_ids <= set(f[key]) for f in feats[::2])  # tags go in as single added tokens
    if arch == "t5":
        assert loaded.prefix == "summarize: " and loaded.tokenizer.decode(feats[0][key]).startswith("summarize:")
    gen = build_generation_config(_generation(**SETTINGS[setting]), loaded.model)
    if arch == "bart":
        gen.forced_bos_token_id = loaded.tokenizer.bos_token_id  # as bart-large-cnn's config has it
    assert backends.ct2_unsupported(gen, loaded.family, loaded.config) is None
    hf = backends.HFEngine(loaded.model, family, gen, fast_cache=True)
    path = tmp_path / "ct2"
    assert backends.convert(loaded.model, loaded.tokenizer, path, "float32") > 0
    ct2 = backends.CT2Engine(path, family, gen, "float32", torch.device("cpu"), 1, 42)
    ours, theirs = [], []
    with torch.inference_mode():
        for i in range(0, len(feats), 6):  # uneven batches: padding differs between them
            ours += list(zip(*ct2.generate(ct2.collate(feats[i : i + 6]))))
            theirs += list(zip(*hf.generate(hf.collate(feats[i : i + 6]))))
    assert ours == theirs  # texts and generated lengths
    assert len({t for t, _ in ours}) > 1
    if "min_new_tokens" in SETTINGS[setting]:
        assert min(n for _, n in ours) >= 6 - 1  # min_new_tokens held (BART's first token is <s>, not counted)


def test_causal_beams_reach_ctranslate2_one_prompt_length_at_a_time() -> None:
    """CTranslate2's beam search over prompts of unequal lengths can change a shorter prompt's result (seen on a tiny
    Qwen3, tests/test_real_tokenizers.py): with beams each call gets one length; results come back in input order."""

    class Generator:  # records what CTranslate2 would be asked
        def generate_batch(self, prompts: list[list[str]], **options: object) -> list[SimpleNamespace]:
            calls.append([len(p) for p in prompts])
            return [SimpleNamespace(sequences_ids=[[len(p), ord(p[0])]]) for p in prompts]

    engine = backends.CT2Engine.__new__(backends.CT2Engine)  # no model: only the batching is under test
    engine.engine = Generator()
    prompts = [["a"] * 3, ["b"], ["c"] * 3, ["d"] * 2]
    for beams, expected_calls in ((4, [[3, 3], [1], [2]]), (1, [[3, 1, 3, 2]])):
        calls: list[list[int]] = []
        engine.options = {"beam_size": beams}
        results = engine._generate_batch(prompts)
        assert [r.sequences_ids[0] for r in results] == [[3, ord("a")], [1, ord("b")], [3, ord("c")], [2, ord("d")]]
        assert calls == expected_calls


def test_forced_bos_and_eos_map_to_prefix_and_shorter_limit() -> None:
    from transformers import GenerationConfig

    gen = GenerationConfig(num_beams=4, max_new_tokens=10, min_new_tokens=2, forced_bos_token_id=0,
                           forced_eos_token_id=2, early_stopping=True, length_penalty=2.0)  # fmt: skip
    opts, forced = backends.ct2_options(gen, "seq2seq")
    assert forced == 0
    assert opts == {"beam_size": 4, "no_repeat_ngram_size": 0, "repetition_penalty": 1.0, "length_penalty": 2.0,
                    "max_decoding_length": 9, "min_decoding_length": 2}  # fmt: skip
    sampled, _ = backends.ct2_options(
        GenerationConfig(do_sample=True, top_k=0, top_p=0.9, temperature=0.7, max_new_tokens=5), "causal"
    )
    assert sampled["sampling_topk"] == 0 and sampled["sampling_topp"] == 0.9 and sampled["sampling_temperature"] == 0.7
    assert sampled["include_prompt_in_result"] is False and sampled["max_length"] == 5


# --- through predict.py -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def t5_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("t5run"), "t5")


def _cache_dirs(run: Path) -> list[Path]:
    return sorted(p for p in (run / "export").iterdir() if p.name.startswith(backends.CACHE_PREFIX))


@pytest.mark.slow
def test_auto_falls_back_and_explicit_backend_errors(
    t5_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    setting = "generation.no_repeat_ngram_size=3"  # with beams 4: HF and CTranslate2 differ
    metrics = predict_here(tmp_path / "auto", f"model_dir={t5_run}", "generation=beam4", setting)
    out = capsys.readouterr().out
    assert (
        metrics["backend"] == "hf" and "generation.no_repeat_ngram_size=3 with beam search" in metrics["backend_reason"]
    )
    saved = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert (saved["backend"], saved["backend_reason"]) == (metrics["backend"], metrics["backend_reason"])
    assert "backend hf (auto: CTranslate2 cannot honour generation.no_repeat_ngram_size=3 with beam search)" in out
    err = _fails(
        tmp_path / "explicit", capsys, f"model_dir={t5_run}", "generation=beam4", setting, "backend=ctranslate2"
    )
    assert "generation.no_repeat_ngram_size=3" in err and "backend=hf" in err
    err = _fails(tmp_path / "stop", capsys, f"model_dir={t5_run}", "generation=beam4",
                 "generation.early_stopping=false", "backend=ctranslate2")  # fmt: skip
    assert "generation.early_stopping=False" in err


@pytest.mark.slow
def test_conversion_cache_reused_and_rebuilt_after_weights_change(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "t5", steps=2)
    first = predict_here(tmp_path / "a", f"model_dir={run}")
    assert first["backend"] == "ctranslate2" and first["compute_type"] == "float32" and first["conversion_seconds"] > 0
    [cache] = _cache_dirs(run)
    assert cache.name.startswith("ctranslate2-float32-") and (cache / "model.bin").is_file()
    before = (cache / "model.bin").stat().st_mtime_ns
    second = predict_here(tmp_path / "b", f"model_dir={run}")
    assert second["conversion_seconds"] == 0 and (cache / "model.bin").stat().st_mtime_ns == before
    assert read_predictions(tmp_path / "a") == read_predictions(tmp_path / "b")
    # new weights (another training of the same shape): a new cache, and its own outputs
    other = make_run(tmp_path / "other", "t5", steps=40)
    for name in ("model.safetensors",):
        (run / "export" / name).write_bytes((other / "export" / name).read_bytes())
    third = predict_here(tmp_path / "c", f"model_dir={run}")
    assert third["conversion_seconds"] > 0 and len(_cache_dirs(run)) == 2
    hf = predict_here(tmp_path / "d", f"model_dir={run}", "backend=hf")
    assert read_predictions(tmp_path / "c") == read_predictions(tmp_path / "d") != read_predictions(tmp_path / "a")
    assert hf["backend"] == "hf" and hf["compute_type"] is None


@pytest.mark.slow
def test_killed_conversion_leaves_nothing_behind(tmp_path: Path) -> None:
    """predict.py killed (SIGKILL) while CTranslate2 writes the conversion: the next run converts afresh and
    removes the killed one's temporary directory; nothing half-written ever has the cache's name."""
    run = make_run(tmp_path / "run", "t5", steps=1)
    args = ["data.synthetic_sizes.test=3", "generation=greedy", "generation.max_new_tokens=4", f"model_dir={run}"]
    killed = run_cli("tests/predict_probe.py", *args, f"output.dir={tmp_path / 'killed'}",
                     env={"PREDICT_PROBE": "die-converting"})  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _cache_dirs(run) == []  # only a hidden temporary directory, never the cache's name
    assert [p for p in (run / "export").iterdir() if ".tmp-" in p.name]
    metrics = predict_here(tmp_path / "out", f"model_dir={run}")
    assert metrics["backend"] == "ctranslate2" and metrics["conversion_seconds"] > 0
    assert [r["id"] for r in read_predictions(tmp_path / "out")] == synthetic_ids()
    assert [p.name for p in (run / "export").iterdir() if ".tmp-" in p.name] == []  # the leftovers are gone
    [cache] = _cache_dirs(run)
    assert (cache / "model.bin").stat().st_size > len(b"partial")


def _read_only(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Files under `root` cannot be created, as on a read-only mount, also for root (CI runs as root, whom a chmod
    does not stop): tempfile's creators fail there with EROFS, so engines' own writability probe sees it."""
    root.chmod(0o555)  # and for a non-root user, the directory really is read-only
    for name in ("mkstemp", "mkdtemp"):
        real = getattr(tempfile, name)

        def refuse(*args: Any, real: Any = real, dir: Any = None, **kwargs: Any) -> Any:
            if dir is not None and Path(dir).resolve().is_relative_to(root.resolve()):
                raise OSError(errno.EROFS, "Read-only file system", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, name, refuse)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_cache_location_beside_the_model_or_under_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert backends.cache_location(None, "hub-model", "int8", "abc", str(tmp_path)) == (
        tmp_path / "ctranslate2" / "hub-model-ctranslate2-int8-abc"
    )
    model = tmp_path / "model"
    model.mkdir()
    assert (
        backends.cache_location(model, "m", "float32", "abc", str(tmp_path / "c")) == model / "ctranslate2-float32-abc"
    )
    _read_only(monkeypatch, model)
    assert backends.cache_location(model, "m", "float32", "abc", str(tmp_path / "c")) == (
        tmp_path / "c" / "ctranslate2" / "m-ctranslate2-float32-abc"
    )
    assert list(model.iterdir()) == []  # the probe left nothing behind


@pytest.mark.slow
def test_read_only_model_dir_converts_under_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model on a read-only mount: the conversion lands under paths.cache_dir, predict succeeds, and the model's
    directory is left exactly as it was (then the next run finds the conversion there)."""
    run = make_run(tmp_path / "run", "t5", steps=2)
    before = _snapshot(run)
    cache = tmp_path / "cache"
    _read_only(monkeypatch, run)
    try:
        first = predict_here(tmp_path / "a", f"model_dir={run}", f"paths.cache_dir={cache}")
        second = predict_here(tmp_path / "b", f"model_dir={run}", f"paths.cache_dir={cache}")
    finally:
        run.chmod(0o755)
    assert first["backend"] == "ctranslate2" and first["conversion_seconds"] > 0
    [converted] = [p for p in (cache / "ctranslate2").iterdir() if not p.name.startswith(".")]  # not its lock
    assert converted.name.startswith("run-ctranslate2-float32-")  # labelled with the model directory's name
    assert (converted / "model.bin").is_file()
    assert second["conversion_seconds"] == 0  # found where it was put
    assert _snapshot(run) == before  # nothing written, renamed or left behind in the model's directory
    assert [r["id"] for r in read_predictions(tmp_path / "a")] == synthetic_ids()
    assert read_predictions(tmp_path / "a") == read_predictions(tmp_path / "b")


@pytest.mark.slow
def test_unknown_backend_or_compute_type(t5_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "backend=onnx is unknown" in _fails(tmp_path / "o1", capsys, f"model_dir={t5_run}", "backend=onnx")
    assert "compute_type=int3 is unknown" in _fails(tmp_path / "o2", capsys, f"model_dir={t5_run}", "compute_type=int3")


@pytest.mark.slow
def test_sampling_runs_on_ctranslate2_and_is_seeded(t5_run: Path, tmp_path: Path) -> None:
    """Sampling maps (top-k, top-p, temperature, seed): the same seed draws the same summaries again."""
    args = (f"model_dir={t5_run}", "generation=sampling", "generation.max_new_tokens=12")
    first = predict_here(tmp_path / "a", *args)
    predict_here(tmp_path / "b", *args)
    predict_here(tmp_path / "greedy", f"model_dir={t5_run}")
    assert first["backend"] == "ctranslate2"
    assert read_predictions(tmp_path / "a") == read_predictions(tmp_path / "b") != read_predictions(tmp_path / "greedy")
