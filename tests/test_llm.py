"""Instruction-tuned decoder LLMs: chat-template prompts, the loss mask, end-of-turn stopping, packing,
LoRA/QLoRA on tiny_llama, the real presets' recipes, and one line for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from conftest import TINY_RUN, assert_train_error, compose_config, epoch_tokens, train_in_process, train_steps
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from sumlab.config.rules import validate
from sumlab.core.errors import SumlabError
from sumlab.data.sources import load_split
from sumlab.family import IGNORE_INDEX, ChatPrompt, decode, make_family
from sumlab.models import adapters
from sumlab.predict.writer import read_predictions
from sumlab.train.runner import build_module, load_splits

LLMS = ("tiny_llama", "tiny_qwen3")
END_OF_TURN = {"tiny_llama": "<|eot_id|>", "tiny_qwen3": "<|im_end|>"}
ASSISTANT_HEADER = {
    "tiny_llama": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "tiny_qwen3": "<|im_start|>assistant\n<think>\n\n</think>\n\n",  # Qwen3 with thinking off
}
PRESETS = ("qwen2_5_0_5b_instruct", "qwen2_5_1_5b_instruct", "qwen3_1_7b", "qwen3_4b", "qwen3_8b",
           "llama3_2_1b_instruct", "llama3_2_3b_instruct", "gemma3_1b_it", "exaone4_1_2b", "solar_10_7b_instruct",
           "bllossom_8b")  # fmt: skip


def build(model: str, tmp_path: Path, *extra: str):
    cfg = compose_config([f"model={model}", *TINY_RUN, *extra], run_dir=tmp_path)
    L.seed_everything(cfg.seed)
    splits = load_splits(cfg)
    module, datamodule, _ = build_module(cfg, splits)
    # the same rows as Python examples ({"id", "text", "summary"}), for encoding by hand
    examples = {s: load_split(cfg.data, s, seed=cfg.seed, cache_dir=cfg.paths.cache_dir) for s in splits}
    return cfg, examples, module, datamodule


# --- prompts and the loss mask ------------------------------------------------------------------------
@pytest.mark.parametrize("model", LLMS)
def test_loss_mask_covers_exactly_the_answer_and_end_of_turn(model: str, tmp_path: Path) -> None:
    _, splits, module, _ = build(model, tmp_path)
    tok, family = module.tokenizer, module.family
    examples = splits["train"][:3]
    rows = [{"idx": i, **family.features(e["text"], e["summary"], 512, 64)} for i, e in enumerate(examples)]
    batch = family.collate(rows)
    end_id = tok.convert_tokens_to_ids(END_OF_TURN[model])
    for i, (row, example) in enumerate(zip(rows, examples, strict=True)):
        labels = batch["labels"][i]
        kept = labels[labels != IGNORE_INDEX].tolist()
        assert kept == tok(example["summary"], add_special_tokens=False)["input_ids"] + [end_id]
        start = len(row["prompt_ids"])  # right after the assistant header: the answer, then the end of turn
        assert batch["input_ids"][i, start : start + len(kept)].tolist() == kept
        assert (labels[:start] == IGNORE_INDEX).all() and (labels[start + len(kept) :] == IGNORE_INDEX).all()
        prompt = tok.decode(row["prompt_ids"])
        assert prompt.endswith(ASSISTANT_HEADER[model]) and example["text"] in prompt
        assert "You are a helpful assistant" in prompt  # the system turn


@pytest.mark.parametrize("model", LLMS)
def test_dialogue_cut_from_its_start_never_the_template(model: str, tmp_path: Path) -> None:
    _, _, module, _ = build(model, tmp_path)
    tok, family = module.tokenizer, module.family
    whole = family.features("short", None, 512, 8)["prompt_ids"]
    long_text = " ".join(f"word{i}" for i in range(300))
    prompt = family.features(long_text, None, 120, 8)["prompt_ids"]
    assert len(prompt) == 120
    text = tok.decode(prompt)
    head, tail = tok.decode(whole).split("short")
    assert text.startswith(head) and text.endswith("word299" + tail)  # the template whole, the dialogue's end kept
    assert "word0 " not in text
    with pytest.raises(SumlabError, match="data.max_source_length=20 leaves no room"):
        family.features(long_text, None, 20, 8)


@pytest.mark.parametrize("model", LLMS)
def test_prompt_is_the_same_in_training_and_prediction(model: str, tmp_path: Path) -> None:
    """predict.py restores the run's chat prompt (template use, system, user, end of turn) and builds the same ids."""
    from sumlab.models.loading import _chat_prompt

    cfg, splits, module, _ = build(
        model, tmp_path, "model.prompt.system='Be brief.'", "model.prompt.user='Dialogue: {text} Summary?'"
    )
    run_cfg = OmegaConf.create({"model": OmegaConf.to_container(cfg.model, resolve=True)})
    defaults = compose_config([f"model_dir={tmp_path}"], config_name="predict", run_dir=tmp_path).model
    chat = _chat_prompt(defaults, run_cfg)
    assert chat == ChatPrompt("Be brief.", "Dialogue: {text} Summary?", (END_OF_TURN[model],))
    predict_family = make_family("causal", module.tokenizer, "", "", chat=chat)
    for example in splits["validation"][:3]:
        trained = module.family.features(example["text"], example["summary"], 256, 64)["prompt_ids"]
        assert predict_family.features(example["text"], None, 256, 64)["prompt_ids"] == trained
        assert "Be brief." in module.tokenizer.decode(trained)


def test_prompt_fills_other_data_columns(tmp_path: Path) -> None:
    """{topic}-style placeholders take the example's columns (passed as ``fields``); the dialogue stays {text}."""
    _, _, module, _ = build("tiny_qwen3", tmp_path)
    chat = ChatPrompt(None, "Topic: {topic}\n{text}", ("<|im_end|>",))
    family = make_family("causal", module.tokenizer, "", "", chat=chat)
    prompt = module.tokenizer.decode(
        family.features("#Person1#: hi there", "hi", 256, 8, fields={"topic": "greeting"})["prompt_ids"]
    )
    assert prompt.startswith("<|im_start|>user\nTopic: greeting\n#Person1#: hi there<|im_end|>")  # no system turn
    with pytest.raises(SumlabError, match=r"\{topic\} is not a column of the data"):
        family.features("hi", None, 256, 8, fields={"fname": "x"})


@pytest.mark.slow
@pytest.mark.parametrize("model", LLMS)
def test_generation_stops_at_end_of_turn_and_returns_the_answer_only(model: str, tmp_path: Path) -> None:
    """A model taught two answers stops right after each (end-of-turn, not max_new_tokens), no template text."""
    _, splits, module, _ = build(model, tmp_path, "model.tiny.dropout=0.0", "generation.max_new_tokens=48")
    family = module.family
    examples = sorted(splits["train"], key=lambda e: len(e["text"]) + len(e["summary"]))[:2]
    rows = [{"idx": i, **family.features(e["text"], e["summary"], 256, 48)} for i, e in enumerate(examples)]
    train_steps(module, family.collate(rows), steps=60, lr=1e-2)
    batch = family.collate([{"idx": r["idx"], "prompt_ids": r["prompt_ids"]} for r in rows])
    # the raw ids: the end-of-turn token right after each answer, nothing but padding after it
    config = module.generation_config
    with torch.no_grad():
        raw = module.model.generate(
            input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], generation_config=config
        )
        texts, lengths = module.generate(batch)
    end_id = module.tokenizer.convert_tokens_to_ids(END_OF_TURN[model])
    new = raw[:, batch["prompt_ids"].shape[1] :]
    for i, row in enumerate(rows):
        answer_len = len(row["target_ids"]) - 1
        assert new[i, answer_len] == end_id
        assert (new[i, answer_len + 1 :] == module.tokenizer.pad_token_id).all()
    assert new.shape[1] < config.max_new_tokens  # stopped by the end of turn
    assert texts == [e["summary"] for e in examples]
    assert lengths.tolist() == [len(r["target_ids"]) - 1 for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("model", LLMS)
def test_trains_exports_and_reloads_with_identical_generations(model: str, tmp_path: Path) -> None:
    """train.py end to end; predict's loader on the run rebuilds the chat family and generates the same text."""
    from sumlab.models.loading import load

    run_dir = tmp_path / "run"
    _, cfg = train_in_process([f"model={model}", *TINY_RUN, "generation.min_new_tokens=4"], run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 8 and metrics["validation"]["num_examples"] == 9
    run_cfg = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "metrics")}
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(run_cfg), run_dir / ".hydra" / "config.yaml")  # as the Hydra job writes it

    L.seed_everything(cfg.seed)
    module, datamodule, _ = build_module(cfg, load_splits(cfg))
    module.load_state_dict(torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"])
    module.eval()
    batch = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        expected, _ = module.generate(batch)

    overrides = compose_config([f"model_dir={run_dir}"], config_name="predict", run_dir=tmp_path / "p").model
    loaded = load(str(run_dir), overrides, str(tmp_path / "cache"))
    assert loaded.chat is not None and loaded.chat.end_of_turn == (END_OF_TURN[model],)
    end_id = loaded.tokenizer.convert_tokens_to_ids(END_OF_TURN[model])
    assert end_id in loaded.model.generation_config.eos_token_id  # any HF user's generate stops at the end of turn
    family = make_family("causal", loaded.tokenizer, loaded.prefix, loaded.separator, chat=loaded.chat)
    examples = load_split(cfg.data, "validation", seed=cfg.seed, cache_dir=cfg.paths.cache_dir)
    order = batch["idx"].tolist()  # validation batches are length-sorted
    rows = [{"idx": i, **family.features(examples[i]["text"], None, cfg.data.max_source_length, 8)} for i in order]
    assert [r["prompt_ids"] for r in rows] == [datamodule.tokenized("validation")[i]["prompt_ids"] for i in order]
    from sumlab.generation.config import build_generation_config

    with torch.no_grad():
        got = decode(
            loaded.tokenizer,
            family.generate(loaded.model, family.collate(rows), build_generation_config(cfg.generation, loaded.model)),
        )
    assert got == expected and all(got)
    assert not any(marker in t for t in got for marker in ("<|", "assistant"))


# --- packing --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model", LLMS)
def test_packed_loss_equals_unpacked_loss_with_fewer_pads(model: str, tmp_path: Path) -> None:
    _, splits, module, _ = build(model, tmp_path, "model.tiny.dropout=0.0")
    packed_family = make_family("causal", module.tokenizer, "", "", chat=module.family.chat, packing=True)
    examples = splits["train"][:8]
    rows = [{"idx": i, **module.family.features(e["text"], e["summary"], 256, 64)} for i, e in enumerate(examples)]
    rows += [
        {"idx": 8 + i, **module.family.features(f"#Person1#: Hi {i}.", "They greet.", 256, 64)} for i in range(3)
    ]  # short ones share a row
    plain, packed = module.family.collate(rows), packed_family.collate(rows)
    assert "attention_mask" not in packed and packed["input_ids"].shape[1] == plain["input_ids"].shape[1]
    assert packed["input_ids"].shape[0] < len(rows)  # several examples per row
    starts = int(packed["position_ids"].eq(0).sum())  # positions restart per example (and per row's padding tail)
    assert len(rows) <= starts <= len(rows) + packed["input_ids"].shape[0]
    pads = int((plain["attention_mask"] == 0).sum())
    assert int((packed["packed_mask"] == 0).sum()) < pads  # fewer padding tokens
    assert int(packed["packed_mask"].sum()) == int(plain["attention_mask"].sum())
    module.train()
    with torch.no_grad():
        plain_loss = module.family.loss(module.model, plain, 0.0)
        packed_loss = packed_family.loss(module.model, packed, 0.0)
    assert abs(plain_loss.item() - packed_loss.item()) < 1e-5, (plain_loss.item(), packed_loss.item())
    assert packed_family.tokens(packed) == module.family.tokens(plain)


@pytest.mark.slow
def test_packing_trains(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _, cfg = train_in_process(["model=tiny_llama", *TINY_RUN, "data.packing=true", "test=false", "export=false",
                               "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"], run_dir)  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    tokens, batches = epoch_tokens(cfg)
    # every example's tokens counted once: packed rows' padding is not training tokens
    assert (metrics["global_step"], metrics["train_tokens"]) == (batches, tokens) == (8, tokens)


# --- LoRA and QLoRA on tiny_llama -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_adapters_on_tiny_llama_train_and_merge(method: str, tmp_path: Path) -> None:
    """Loss falls with only adapter weights trained; export/ (merged, full precision) generates as the adapter model."""
    _, _, module, datamodule = build(
        "tiny_llama", tmp_path, f"qlora={method}", "qlora.r=8", "qlora.alpha=16", "qlora.dropout=0.0",
        "data.max_source_length=128", "generation.max_new_tokens=6", "generation.min_new_tokens=6",
        "model.tiny.dropout=0.0",
    )  # fmt: skip
    model = module.model
    assert adapters.is_adapted(model) and adapters.is_quantized(model) == (method == "qlora")
    trained = {
        n.split(".lora_A")[0].rsplit(".", 1)[-1]
        for n, p in model.named_parameters()
        if p.requires_grad and "lora_A" in n
    }
    assert trained == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        before = module.family.loss(model, batch, 0.0).item()
    train_steps(module, batch, steps=10, lr=3e-3)  # a random base with rank-8 adapters learns slowly, but steadily
    with torch.no_grad():
        after = module.family.loss(model, batch, 0.0).item()
    assert after < before - 0.05, (before, after)

    val = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        expected = module.family.generate(model, val, module.generation_config)
    out = adapters.export(model, module.tokenizer, tmp_path / "export")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    with torch.no_grad():
        got = module.family.generate(merged, val, module.generation_config)
    assert decode(module.tokenizer, got) == decode(module.tokenizer, expected)


# --- presets ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_llm_presets_know_their_recipe(preset: str, tmp_path: Path) -> None:
    cfg = compose_config([f"model={preset}", "qlora=qlora"], run_dir=tmp_path)
    validate(cfg)
    m = cfg.model
    assert m.family.value == "causal" and m.chat_template and len(m.end_of_turn) >= 1
    assert m.tiny is None and not m.trust_remote_code  # all of them are native in transformers 5
    assert set(m.lora_target_modules) == set(adapters.LLM_TARGETS)
    assert 1e-4 <= m.learning_rate <= 2e-4 and "bf16-mixed" in m.safe_precisions
    assert m.gradient_checkpointing == (preset != "qwen2_5_0_5b_instruct")  # on from 1B parameters


def test_korean_llm_experiment(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=korean_dialogue_llm_qlora"], run_dir=tmp_path)
    validate(cfg)
    assert (cfg.model.name, cfg.qlora.method.value, cfg.generation.num_beams, cfg.metrics.tokenizer) == (
        "bllossom_8b",
        "qlora",
        1,
        "kiwi",
    )
    assert (cfg.qlora.quant_type, cfg.qlora.double_quant, cfg.data.name) == ("nf4", True, "korean_dialogue")
    assert "{text}" in cfg.model.prompt.user and "요약" in cfg.model.prompt.user


# --- bad input: one line each -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["model=tiny_qwen3", "model.prompt.user='Summarize this.'"], ["model.prompt.user has no {text}"]),
        (
            ["model=tiny_qwen3", "model.prompt.user='About {speaker}: {text}'"],
            ["{speaker}", "not a column of the data"],
        ),
        (["model=tiny_qwen3", "model.prompt.user='{text:>5}'"], ["{text}", "not a plain column name"]),
        (["model=tiny_gpt2", "model.chat_template=true"], ["has no chat template", "model.chat_template=false"]),
        (["model=tiny_t5", "model.chat_template=true"], ["decoder-only", "model.family=causal"]),
        (["model=tiny_t5", "data.packing=true"], ["data.packing=true", "model.family=causal"]),
        (["model=tiny_llama", "model.end_of_turn=['<|nope|>']"], ["'<|nope|>'", "not in the tokenizer"]),
        (["model=tiny_llama", "data.max_source_length=16"], ["data.max_source_length=16", "chat template"]),
    ],
)
def test_bad_input_one_line(capsys, tmp_path: Path, extra: list[str], needles: list[str]) -> None:
    assert_train_error(capsys, [*extra, *TINY_RUN], tmp_path, *needles)


def test_packing_refused_when_attention_cannot_isolate(capsys, monkeypatch, tmp_path: Path) -> None:
    """An attention path that ignores packed positions (simulated: no packed-sequence detection) is refused."""
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    assert_train_error(capsys, ["model=tiny_llama", *TINY_RUN, "data.packing=true"], tmp_path,
                    "data.packing=true", "attend to each other", "data.packing=false")  # fmt: skip


# --- prediction on CTranslate2 --------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_llama_ctranslate2_on_two_ranks_equals_hf_in_one(tmp_path: Path) -> None:
    """predict.py: CTranslate2's Generator (chat prompt in, answer out, stop at <|eot_id|>) on 2 ranks writes
    every id once, in order, with the same greedy text as transformers in one process."""
    from test_predict import DDP2, predict_cli, synthetic_ids

    run_dir = tmp_path / "run"
    _, cfg = train_in_process(["model=tiny_llama", *TINY_RUN, "trainer.max_epochs=2"], run_dir)
    run_cfg = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "metrics")}
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(run_cfg), run_dir / ".hydra" / "config.yaml")  # as the Hydra job writes it
    args = ["data.synthetic_sizes.test=7", "batch_size=3", "generation=greedy", "generation.max_new_tokens=12",
            "trainer.enable_progress_bar=false", f"model_dir={run_dir}"]  # fmt: skip
    one = predict_cli(*args, f"output.dir={tmp_path / 'hf'}", "backend=hf")
    two = predict_cli(*args, f"output.dir={tmp_path / 'ct2'}", "backend=ctranslate2", *DDP2)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    hf, ct2 = (read_predictions(tmp_path / d) for d in ("hf", "ct2"))
    assert [r["id"] for r in ct2] == synthetic_ids(7)  # every id exactly once, in input order
    assert [r["prediction"] for r in ct2] == [r["prediction"] for r in hf] and all(r["prediction"] for r in hf)
    assert not any(marker in r["prediction"] for r in ct2 for marker in ("<|", "assistant"))
    assert json.loads((tmp_path / "ct2" / "metrics.json").read_text())["backend"] == "ctranslate2"
