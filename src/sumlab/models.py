"""Build (model, tokenizer): from the hub or a local HF directory, or a tiny model from a config.

Tiny models are the offline default: their tokenizer is trained on the training texts (cached under
``paths.cache_dir`` by a hash of the texts and settings), then the model is built from a transformers
config of the same family. Tags found in the data (``#Person1#``, ``#PhoneNumber#``) are added as
whole tokens, and the embeddings resized.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

from omegaconf import DictConfig
from transformers import (
    AddedToken,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from sumlab import adapters
from sumlab.config import enum_value
from sumlab.errors import SumlabError
from sumlab.family import FAMILIES

# Special tokens of each tiny architecture, in id order, as the real checkpoints number them.
TINY_SPECIALS = {
    "t5": {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
    "bart": {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "mask_token": "<mask>"},
    "gpt2": {"eos_token": "<|endoftext|>"},
}


def find_tags(texts: Iterable[str], pattern: str) -> list[str]:
    """Speaker tags and masks in the data, e.g. #Person1#, #PhoneNumber#: sorted for a stable vocabulary."""
    regex = re.compile(pattern)
    return sorted({m for t in texts for m in regex.findall(t)})


def train_tiny_tokenizer(arch: str, vocab_size: int, texts: list[str]) -> PreTrainedTokenizerFast:
    """A BPE tokenizer for a tiny model (train texts without their tags: those are added whole later)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = list(TINY_SPECIALS[arch].values())
    tok = Tokenizer(models.BPE(unk_token=TINY_SPECIALS[arch].get("unk_token")))
    if arch == "t5":  # T5-style "▁word" pieces
        tok.normalizer = normalizers.NFKC()
        # "first": no space is invented after an added tag, so "#Person1#: hi" decodes unchanged.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Metaspace(prepend_scheme="first"), pre_tokenizers.Punctuation()]
        )
        tok.decoder = decoders.Metaspace(prepend_scheme="first")
        # every printable ASCII character, so a prefix or a rare letter never becomes <unk>
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=list(string.printable.strip())
        )
    else:  # byte-level, as BART's and GPT-2's: every string is representable
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    tok.train_from_iterator(texts, trainer)
    if arch == "t5":
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    elif arch == "bart":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **TINY_SPECIALS[arch])
    if arch == "gpt2":
        hf.pad_token = hf.eos_token  # as GPT-2 itself: causal collation masks by position, not by pad id
    return hf


def cached_tiny_tokenizer(tiny: DictConfig, texts: list[str], cache_dir: str) -> Any:
    arch = enum_value(tiny.arch)
    digest = hashlib.sha256(f"{arch}|{tiny.vocab_size}|".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    path = Path(cache_dir) / "tokenizers" / f"{arch}-{tiny.vocab_size}-{digest.hexdigest()[:16]}"
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
        train_tiny_tokenizer(arch, int(tiny.vocab_size), texts).save_pretrained(tmp)
        try:
            tmp.rename(path)  # atomic: a concurrent run that got there first wins, ours is dropped
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(path)


def tiny_model(tiny: DictConfig, tokenizer: Any) -> Any:
    arch, vocab, d, layers, heads = enum_value(tiny.arch), len(tokenizer), tiny.d_model, tiny.num_layers, tiny.num_heads
    if arch == "t5":
        config = T5Config(
            vocab_size=vocab, d_model=d, d_kv=d // heads, d_ff=tiny.d_ff, num_layers=layers,
            num_decoder_layers=layers, num_heads=heads, dropout_rate=tiny.dropout,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        )  # fmt: skip
        return T5ForConditionalGeneration(config)
    if arch == "bart":
        config = BartConfig(
            vocab_size=vocab, d_model=d, encoder_layers=layers, decoder_layers=layers,
            encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=tiny.d_ff,
            decoder_ffn_dim=tiny.d_ff, dropout=tiny.dropout, max_position_embeddings=tiny.max_positions,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        return BartForConditionalGeneration(config)
    config = GPT2Config(
        vocab_size=vocab, n_embd=d, n_layer=layers, n_head=heads, n_inner=tiny.d_ff, n_positions=tiny.max_positions,
        resid_pdrop=tiny.dropout, embd_pdrop=tiny.dropout, attn_pdrop=tiny.dropout,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def load_pretrained(
    name_or_path: str, family: str, revision: Any = None, trust_remote_code: bool = False,
    model_kwargs: Optional[dict[str, Any]] = None,
) -> tuple[Any, Any]:
    """A hub id or local HF directory -> (model, tokenizer); one clear error when it cannot be had.

    ``model_kwargs`` go to the model's ``from_pretrained`` only (e.g. ``quantization_config`` from sumlab.adapters).
    """
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = FAMILIES[family].auto_model.from_pretrained(name_or_path, **kwargs, **(model_kwargs or {}))
    except (OSError, ValueError) as ex:
        local = Path(name_or_path).exists()
        where = "that directory holds no loadable model" if local else (
            "it is neither a local directory nor in the Hugging Face cache, and the hub is unreachable"
        )
        raise SumlabError(
            f"cannot load model {name_or_path!r}: {where} ({type(ex).__name__}); "
            "set model.name_or_path to a local HF directory, or download it where there is internet"
        ) from None
    if tokenizer.pad_token is None:  # GPT-2 has none; its EOS is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def add_tags(model: Any, tokenizer: Any, tags: list[str]) -> int:
    """Add tags as whole, non-special tokens (special ones would be dropped when decoding summaries)."""
    before = len(tokenizer)
    # Also for tags the vocabulary has as a piece: only an added token is guaranteed to stay whole.
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in tags])
    if model is not None and len(tokenizer) != before:
        model.resize_token_embeddings(len(tokenizer))
    return len(tokenizer) - before


def build(
    model_cfg: DictConfig, data_cfg: DictConfig, train_texts: list[str], cache_dir: str,
    qlora_cfg: Optional[DictConfig] = None, accelerator: Any = "auto",
) -> tuple[Any, Any, int]:
    """(model, tokenizer, number of tags added) for the configured preset; with LoRA/QLoRA (``qlora_cfg``) a peft model."""
    quantized_load = adapters.load_kwargs(qlora_cfg, accelerator)  # empty unless the base loads quantized
    tags = find_tags(train_texts, data_cfg.special_token_pattern) if data_cfg.special_tokens else []
    if model_cfg.tiny is not None:
        regex = re.compile(data_cfg.special_token_pattern)
        plain = [regex.sub(" ", t) for t in train_texts] if tags else train_texts
        tokenizer = cached_tiny_tokenizer(model_cfg.tiny, plain, cache_dir)
        added = add_tags(None, tokenizer, tags)  # before the model exists: its vocabulary includes them
        model = tiny_model(model_cfg.tiny, tokenizer)
    else:
        model, tokenizer = load_pretrained(
            model_cfg.name_or_path, enum_value(model_cfg.family), model_cfg.revision, model_cfg.trust_remote_code,
            model_kwargs=quantized_load,
        )
        added = add_tags(model, tokenizer, tags)
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if adapters.enabled(qlora_cfg):  # after tags: their embedding rows stay trainable
        model = adapters.apply(model, tokenizer, qlora_cfg, model_cfg, added, quantized_load)
    return model, tokenizer, added
