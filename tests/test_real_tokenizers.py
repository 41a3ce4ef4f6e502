"""Tiny models on the real tokenizers of every family (``model.tiny.tokenizer``), through train -> export -> predict.

The tokenizers are those of the hub checkpoints (``../shared/tokenizers``, see its PROVENANCE.md; absent in CI, where
these tests skip). Each family trains once (module fixture) on one synthetic dialogue until the model repeats its
summary (cut to ``data.max_target_length``) and the end-of-sequence or end-of-turn token after it, then predicts that
dialogue and another. Checked per family: the exported tokenizer is the real one, sources and labels carry the
family's prefix, BOS and EOS (KoBART's added by sumlab), tags are whole tokens, chat prompts render with thinking off
and a fixed date and decode to the answer only, and CTranslate2 (fp32) writes the same text as transformers: greedy
through predict.py (``backend=ctranslate2`` vs ``backend=hf``), 4 beams through predict.py's engines. Qwen2.5 (the
vocabulary and architecture of Qwen3, with its own template) is built and its tokens checked, not trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import ROOT, assert_train_error, compose_config, train_in_process
from omegaconf import DictConfig, OmegaConf

from sumlab.data import synthetic
from sumlab.family import decode, make_family
from sumlab.predict.writer import read_predictions
from sumlab.text.prompts import DEFAULT_SEPARATOR, DEFAULT_SYSTEM_PROMPT, TEMPLATE_DATE
from sumlab.text.tags import find_tags

pytest.importorskip("ctranslate2")

TOKENIZERS = ROOT.parent / "shared" / "tokenizers"
needs_tokenizers = pytest.mark.skipif(
    not TOKENIZERS.is_dir(), reason=f"the real tokenizers are not here ({TOKENIZERS}: ../shared is absent in CI)"
)
FAMILIES = {  # tokenizer folder -> (tiny model preset, extra overrides)
    "t5": ("tiny_t5", ["optim.lr=3e-2"]),  # its tied output layer is scaled down by d_model ** -0.5: learns slower
    "bart": ("tiny_bart", []),
    "kobart": ("tiny_bart", []),
    "pegasus": ("tiny_pegasus", []),
    "gpt2": ("tiny_gpt2", []),
    "qwen3": ("tiny_qwen3", []),
    "qwen2_5": ("tiny_qwen3", []),  # Qwen2.5's tokenizer and template on the Qwen3 architecture, built only
    "llama3": ("tiny_llama", []),
}
BUILT_ONLY = ("qwen2_5",)  # its vocabulary and architecture are Qwen3's, which trains and predicts: tokens only
ASSISTANT_HEADER = {  # the end of each chat prompt
    "qwen3": "<|im_start|>assistant\n<think>\n\n</think>\n\n",  # thinking off
    "qwen2_5": "<|im_start|>assistant\n",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
}
TEMPLATE_PIECES = ("<|", "assistant", "<think>", "</think>", "<s>", "</s>", "<pad>")  # never in a summary
MAX_SOURCE, MAX_TARGET = 64, 4  # tokens: Llama 3's chat template takes about 55 of the source
DATA = ["data=synthetic", "data.synthetic_sizes.train=2", "data.synthetic_sizes.validation=1",
        "data.synthetic_sizes.test=1", f"data.max_source_length={MAX_SOURCE}",
        f"data.max_target_length={MAX_TARGET}"]  # fmt: skip
# One dialogue taught 30 times. AdamW's eps=1e-3: with the default 1e-8 every row of a 150k-token tied embedding
# takes a full-size step from its tiny softmax gradient, and the model takes several times longer to settle.
TRAIN = [*DATA, "data.max_train_samples=1", "data.batch_size=1", "model.tiny.d_model=32", "model.tiny.d_ff=64",
         "model.tiny.num_layers=1", "model.tiny.num_heads=2", "model.tiny.num_kv_heads=null", "model.tiny.dropout=0.0",
         "optim.lr=2e-2", "optim.eps=1e-3", "optim.scheduler=constant", "trainer.max_epochs=30",
         "trainer.limit_val_batches=0", "test=false", "~callbacks.last_checkpoint", "trainer.enable_progress_bar=false",
         "trainer.log_every_n_steps=1", "logger=csv"]  # fmt: skip
MAX_NEW = "generation.max_new_tokens=8"  # twice the taught summary: a model that does not stop shows
PREDICT = [*DATA, "data.split=train", "generation=greedy", MAX_NEW, "trainer.enable_progress_bar=false"]
BACKENDS = ("hf", "ctranslate2")
SEARCHES = ("greedy", "beam4")


@dataclass
class Run:
    name: str  # the tokenizer folder
    cfg: DictConfig  # the training run's config
    loaded: Any  # the export as predict.py loads it (models.loading.LoadedModel); for BUILT_ONLY the built model
    family: Any  # family.Seq2Seq | family.Causal, as predict.py builds it
    added: int  # tags added to the vocabulary
    examples: list[dict[str, str]]  # the predicted rows ({"id", "dialogue", "summary", ...}); the first was taught
    predictions: dict[tuple[str, str], list[str]]  # (backend, search) -> a prediction per example
    metrics: dict[str, dict[str, Any]]  # backend -> predict.py's metrics.json (greedy)

    @property
    def tags(self) -> list[str]:  # those of the training row, the first example
        return find_tags([self.examples[0]["dialogue"], self.examples[0]["summary"]], r"#[A-Za-z][A-Za-z0-9_]*#")


def real(name: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZERS / name)


@pytest.fixture(scope="module", params=list(FAMILIES))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    name = request.param
    preset, extra = FAMILIES[name]
    overrides = [f"model={preset}", f"model.tiny.tokenizer={TOKENIZERS / name}", *TRAIN, *extra]
    root = tmp_path_factory.mktemp(name)
    return (built if name in BUILT_ONLY else trained)(name, overrides, root)


def trained(name: str, overrides: list[str], root: Path) -> Run:
    """Train, export, then greedy predict.py on the training rows with each backend; beams through the same engines
    on the exported model (a predict.py call per search would double the time of this file)."""
    from sumlab.models.loading import load
    from sumlab.predict.runner import run as predict

    _, cfg = train_in_process(overrides, root / "run")
    (root / "run" / ".hydra").mkdir()  # the run config, as the Hydra job writes it
    run_cfg = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "metrics")}
    OmegaConf.save(OmegaConf.create(run_cfg), root / "run" / ".hydra" / "config.yaml")
    predictions, metrics = {}, {}
    for backend in BACKENDS:
        out = root / backend
        args = [f"model_dir={root / 'run'}", *PREDICT, f"backend={backend}", f"output.dir={out}"]
        metrics[backend] = predict(compose_config([*args, f"paths.run_dir={out}"], config_name="predict"))
        predictions[backend, "greedy"] = [r["prediction"] for r in read_predictions(out)]
    predict_model = compose_config([f"model_dir={root / 'run'}"], config_name="predict").model
    loaded = load(str(root / "run"), predict_model, str(root / "cache"))  # as predict.py loads it
    family = make_family(loaded.family, loaded.tokenizer, loaded.prefix, loaded.separator, chat=loaded.chat)
    examples = synthetic.generate_split("train", 2, int(cfg.seed))
    predictions.update(beam_search(loaded, family, examples, root / "run" / "export"))
    added = json.loads((root / "run" / "metrics.json").read_text())["tags_added_to_vocabulary"]
    return Run(name, cfg, loaded, family, added, examples, predictions, metrics)


def built(name: str, overrides: list[str], root: Path) -> Run:
    """The model and family as training builds them, without training (the checks of tokens and prompts only)."""
    from sumlab.train.runner import build_module, load_splits

    cfg = compose_config(overrides, run_dir=root)
    module, _, added = build_module(cfg, load_splits(cfg))
    loaded = SimpleNamespace(model=module.model, tokenizer=module.tokenizer, family=module.family.name,
                             chat=module.family.chat)  # fmt: skip
    return Run(name, cfg, loaded, module.family, added, synthetic.generate_split("train", 2, int(cfg.seed)), {}, {})


def beam_search(loaded: Any, family: Any, examples: list[dict[str, str]], export: Path) -> dict[tuple, list[str]]:
    """4 beams with predict.py's engines, on the conversion predict.py cached beside the export."""
    import torch

    from sumlab.generation import engines
    from sumlab.generation.config import build_generation_config

    gen = build_generation_config(compose_config(["generation=beam4", MAX_NEW], "predict").generation, loaded.model)
    rows = [family.features(e["dialogue"], None, MAX_SOURCE, MAX_TARGET) for e in examples]
    [converted] = export.glob(f"{engines.CACHE_PREFIX}-float32-*")
    hf = engines.HFEngine(loaded.model, family, gen, fast_cache=True)
    ct2 = engines.CT2Engine(converted, family, gen, "float32", torch.device("cpu"), torch.get_num_threads(), 42)
    with torch.inference_mode():
        return {(engine.name, "beam4"): engine.generate(engine.collate(rows))[0] for engine in (hf, ct2)}


def encode(run: Run, max_source: int = MAX_SOURCE, max_target: int = MAX_TARGET) -> list[dict[str, list[int]]]:
    return [run.family.features(e["dialogue"], e["summary"], max_source, max_target) for e in run.examples]


# --- the tokenizer and the model around it ------------------------------------------------------------------
@needs_tokenizers
@pytest.mark.slow
def test_tokenizer_is_the_real_one(run: Run) -> None:
    """The tokenizer predict.py loads from the export (built-only: the one training builds) has the real one's
    vocabulary and ids, special tokens and chat template, plus the tags; the model's embeddings and ids follow it."""
    tok, model, original = run.loaded.tokenizer, run.loaded.model, real(run.name)
    assert run.added == len(run.tags) >= 2 and len(tok) == len(original) + run.added
    assert model.get_input_embeddings().weight.shape[0] == len(tok)  # the vocabulary, tags included
    vocab = tok.get_vocab()
    assert all(vocab[token] == i for token, i in original.get_vocab().items())
    for key in ("bos_token", "eos_token", "unk_token", "mask_token"):
        assert getattr(tok, key) == getattr(original, key), key
    assert tok.pad_token == (original.pad_token or original.eos_token)  # GPT-2, Llama 3: EOS stands in
    assert tok.chat_template == original.chat_template  # the tokenizer's own template (None for seq2seq and GPT-2)
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    if run.loaded.family == "seq2seq":  # where decoding starts, as the real checkpoints have it
        start = tok.pad_token_id if run.name in ("t5", "pegasus") else tok.eos_token_id  # BART, KoBART: </s>
        assert model.config.decoder_start_token_id == start
        assert getattr(model.config, "forced_eos_token_id", None) in (None, tok.eos_token_id)  # T5 has none


@needs_tokenizers
@pytest.mark.slow
def test_tags_are_single_tokens(run: Run) -> None:
    tok = run.loaded.tokenizer
    source = "input_ids" if run.loaded.family == "seq2seq" else "prompt_ids"
    for tag in run.tags:
        [tag_id] = tok(tag, add_special_tokens=False)["input_ids"]
        assert tok.convert_ids_to_tokens(tag_id) == tag
    tag_ids = set(tok.convert_tokens_to_ids(run.tags))
    used = {i for f in encode(run, 512, 64) for i in f[source]}
    assert {tok.convert_tokens_to_ids("#Person1#"), tok.convert_tokens_to_ids("#Person2#")} <= used & tag_ids


# --- sources and labels -----------------------------------------------------------------------------------
@needs_tokenizers
@pytest.mark.slow
def test_seq2seq_sources_and_labels_carry_the_family_tokens(run: Run) -> None:
    """T5: "summarize: " ... </s>; BART: <s> ... </s> both; KoBART (its tokenizer adds none): <s> source </s>,
    summary </s>; Pegasus: no BOS, ... </s>. Labels end in EOS however short max_target_length cuts them."""
    if run.loaded.family != "seq2seq":
        pytest.skip("decoder-only: see test_causal_prompts_and_targets")
    tok, (bos, eos) = run.loaded.tokenizer, (run.loaded.tokenizer.bos_token_id, run.loaded.tokenizer.eos_token_id)
    first = {"t5": None, "pegasus": None, "bart": bos, "kobart": bos}[run.name]
    label_first = bos if run.name == "bart" else None  # BART's tokenizer starts labels with <s>; KoBART's do not
    for max_source, max_target in ((512, 64), (20, 6)):  # whole, and cut
        for feats in encode(run, max_source, max_target):
            source, labels = feats["input_ids"], feats["labels"]
            assert source[-1] == eos and labels[-1] == eos and source.count(eos) == labels.count(eos) == 1
            assert len(source) <= max_source and len(labels) <= max_target
            if first is None:
                assert bos is None or bos not in source
            else:
                assert source[0] == first and source.count(first) == 1
            assert (labels[0] == label_first) if label_first is not None else (bos is None or bos not in labels)
    if run.name == "t5":
        assert tok.convert_ids_to_tokens(encode(run)[0]["input_ids"][:2]) == ["▁summarize", ":"]
    if run.name == "kobart":  # what the rule above is for
        assert eos not in real("kobart")("안녕하세요")["input_ids"] and bos not in real("kobart")("a")["input_ids"]
    if run.name == "pegasus":  # Pegasus writes line breaks as <n>
        assert decode(tok, [tok("First.<n>Second.")["input_ids"]]) == ["First.\nSecond."]


@needs_tokenizers
@pytest.mark.slow
def test_causal_prompts_and_targets(run: Run) -> None:
    """GPT-2: dialogue, separator, summary, <|endoftext|> (also its pad). Chat: the tokenizer's own template with
    thinking off and the fixed date, one BOS, the answer followed by the end-of-turn token."""
    if run.loaded.family != "causal":
        pytest.skip("encoder-decoder: see test_seq2seq_sources_and_labels_carry_the_family_tokens")
    tok = run.loaded.tokenizer
    for feats, example in zip(encode(run, 512, 64), run.examples, strict=True):
        prompt, target = feats["prompt_ids"], feats["target_ids"]
        text = tok.decode(prompt)
        assert example["dialogue"].strip() in text
        if run.loaded.chat is None:
            assert prompt[-len(run.family.separator_ids) :] == tok(DEFAULT_SEPARATOR)["input_ids"]
            assert target[-1] == tok.eos_token_id == tok.pad_token_id
            continue
        assert target[-1] == tok.convert_tokens_to_ids(run.cfg.model.end_of_turn[0]) == tok.eos_token_id
        assert text.endswith(ASSISTANT_HEADER[run.name]) and DEFAULT_SYSTEM_PROMPT in text
        if run.name == "llama3":  # the template's own date line, fixed so training and prediction prompts agree
            assert f"Today Date: {TEMPLATE_DATE}\n" in text
            assert prompt[0] == tok.bos_token_id and prompt.count(tok.bos_token_id) == 1  # the template's BOS only
        if run.name == "qwen2_5":
            assert "<think>" not in text


# --- prediction -------------------------------------------------------------------------------------------
def skip_unless_predicted(run: Run) -> None:
    if run.name in BUILT_ONLY:
        pytest.skip(f"{run.name} is built only: its vocabulary and architecture predict in the qwen3 run")


@needs_tokenizers
@pytest.mark.slow
def test_predictions_are_the_taught_summaries_only(run: Run) -> None:
    """Greedy on both backends, for the dialogue it was taught: exactly the (cut) summary, stopped by the EOS /
    end-of-turn token (max_new_tokens is longer), with no template or special token in any text."""
    skip_unless_predicted(run)
    feats = encode(run)[0]
    [expected] = decode(run.loaded.tokenizer, [feats.get("labels", feats.get("target_ids"))])
    for backend in BACKENDS:
        assert run.predictions[backend, "greedy"][0] == expected, backend
    for texts in run.predictions.values():
        assert not any(piece in t for t in texts for piece in TEMPLATE_PIECES)


@needs_tokenizers
@pytest.mark.slow
@pytest.mark.parametrize("search", SEARCHES)
def test_ctranslate2_writes_what_hf_writes(run: Run, search: str) -> None:
    skip_unless_predicted(run)
    ct2 = run.metrics["ctranslate2"]
    assert (ct2["backend"], ct2["compute_type"]) == ("ctranslate2", "float32")
    assert run.metrics["hf"]["backend"] == "hf"
    assert run.predictions["ctranslate2", search] == run.predictions["hf", search]
    assert all(run.predictions["hf", search])


# --- without ../shared --------------------------------------------------------------------------------------
def test_tiny_model_is_built_on_the_tokenizer_folder(tmp_path: Path) -> None:
    """A saved tokenizer stands in for a real one: the model takes its vocabulary (tags added), ids and template,
    where without the key a tokenizer would be trained on the data."""
    from sumlab.models import build, train_tiny_tokenizer

    given = train_tiny_tokenizer("llama", 300, ["completely different words than the data has"] * 20)
    given.chat_template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"
    given.save_pretrained(tmp_path / "tok")
    cfg = compose_config(["model=tiny_llama", f"model.tiny.tokenizer={tmp_path / 'tok'}", "model.tiny.d_model=32",
                          "model.tiny.d_ff=64"], run_dir=tmp_path)  # fmt: skip
    texts = ["#Person1#: Hello there. #Person2#: Hi!", "They greet."]
    model, tokenizer, added = build(cfg.model, cfg.data, texts, str(tmp_path / "cache"))
    tags = {"#Person1#": len(given), "#Person2#": len(given) + 1}  # appended to its vocabulary
    assert added == 2 and tokenizer.get_vocab() == {**given.get_vocab(), **tags}
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == len(given) + 2
    assert tokenizer.chat_template == given.chat_template  # its own, not sumlab's tiny Llama template
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        given.bos_token_id, given.eos_token_id, given.pad_token_id)  # fmt: skip


# --- bad input --------------------------------------------------------------------------------------------
def test_tokenizer_folder_missing_or_empty_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    base = ["model=tiny_t5", "data.synthetic_sizes.train=4", "data.synthetic_sizes.validation=2", "test=false"]
    err = assert_train_error(capsys, [*base, f"model.tiny.tokenizer={tmp_path / 'nope'}"], tmp_path / "a",
                             "model.tiny.tokenizer=", "no such directory", "null")  # fmt: skip
    assert str(tmp_path / "nope") in err
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "t5"}')  # a model folder without a tokenizer
    assert_train_error(capsys, [*base, f"model.tiny.tokenizer={tmp_path / 'model'}"], tmp_path / "b",
                       "model.tiny.tokenizer=", "holds no tokenizer", "tokenizer.json")  # fmt: skip
