"""Tiny models built from a config: the offline default (no download).

The tokenizer is a BPE trained on the training texts (cached under ``paths.cache_dir`` by a hash of the
texts and settings), or with ``model.tiny.tokenizer`` a real checkpoint's tokenizer read from a local folder
(:func:`real_tokenizer`); the model is a transformers config of the same family sized by ``model.tiny``, its
vocabulary and special token ids taken from the tokenizer. Trained tokenizers of the decoder-LLM architectures
(``llama``, ``qwen3``) get the special tokens and a chat template in the style of the real instruct checkpoints
(Llama 3 header tokens and ``<|eot_id|>``; Qwen's ``<|im_start|>`` and ``<|im_end|>``, with Qwen3's empty think
block when thinking is off), so the chat-template path is exercised offline as with the real models; a real
tokenizer keeps its own template.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from transformers import (
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PegasusConfig,
    PegasusForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from sumlab.config.schema import enum_value
from sumlab.core.errors import SumlabError
from sumlab.core.io import build_dir_once
from sumlab.models.hub import pad_as_eos

# Special tokens of each tiny architecture, in id order, as the real checkpoints number them.
TINY_SPECIALS = {
    "t5": {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
    "pegasus": {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},  # no BOS, as Pegasus
    "bart": {
        "bos_token": "<s>",
        "pad_token": "<pad>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
    },
    "gpt2": {"eos_token": "<|endoftext|>"},
    # Llama 3 Instruct: EOS is the end-of-turn token; the pad token is Llama 3.1+'s reserved one.
    "llama": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|finetune_right_pad_id|>"},
    "qwen3": {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"},
}
SENTENCEPIECE_STYLE = ("t5", "pegasus")  # trained tokenizers with "▁word" pieces (the others are byte-level BPE)
# Chat-turn tokens besides the named specials above (also special: decoding drops them).
TINY_TURN_TOKENS = {
    "llama": ["<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"],
    "qwen3": ["<|im_start|>", "<think>", "</think>"],
}
# Chat templates in the real checkpoints' format, reduced to system/user/assistant turns.
TINY_CHAT_TEMPLATES = {
    "llama": (
        "{{- bos_token }}{%- for message in messages %}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        " + message['content'] | trim + '<|eot_id|>' }}"
        "{%- endfor %}{%- if add_generation_prompt %}"
        "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
    ),
    "qwen3": (
        "{%- for message in messages %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
        "{%- if enable_thinking is defined and enable_thinking is false %}"
        "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
        "{%- endif %}"
    ),
}


def train_tiny_tokenizer(arch: str, vocab_size: int, texts: list[str]) -> PreTrainedTokenizerFast:
    """A BPE tokenizer for a tiny model (train texts without their tags: those are added whole later)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = list(TINY_SPECIALS[arch].values()) + TINY_TURN_TOKENS.get(arch, [])
    tok = Tokenizer(models.BPE(unk_token=TINY_SPECIALS[arch].get("unk_token")))
    if arch in SENTENCEPIECE_STYLE:  # T5-style "▁word" pieces
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
    else:  # byte-level, as BART's, GPT-2's, Llama 3's and Qwen's: every string is representable
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    tok.train_from_iterator(texts, trainer)
    if arch in SENTENCEPIECE_STYLE:  # EOS appended, no BOS
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    elif arch == "bart":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
    elif arch == "llama":  # Llama 3 prepends BOS (chat prompts carry it in the template instead)
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
        )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, **TINY_SPECIALS[arch], extra_special_tokens=TINY_TURN_TOKENS.get(arch, [])
    )
    if arch == "gpt2":
        hf.pad_token = hf.eos_token  # as GPT-2 itself: causal collation masks by position, not by pad id
    if arch in TINY_CHAT_TEMPLATES:
        hf.chat_template = TINY_CHAT_TEMPLATES[arch]
    return hf


def cached_tiny_tokenizer(tiny: DictConfig, texts: list[str], cache_dir: str) -> Any:
    arch = enum_value(tiny.arch)
    digest = hashlib.sha256(f"{arch}|{tiny.vocab_size}|".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    path = Path(cache_dir) / "tokenizers" / f"{arch}-{tiny.vocab_size}-{digest.hexdigest()[:16]}"
    # one process trains it (ranks and sweep workers wait); a killed build leaves nothing that looks complete
    build_dir_once(path, lambda tmp: train_tiny_tokenizer(arch, int(tiny.vocab_size), texts).save_pretrained(tmp),
                   lambda p: (p / "tokenizer_config.json").is_file())  # fmt: skip
    return AutoTokenizer.from_pretrained(path)


# Files that hold a vocabulary: a folder with none of them is no tokenizer (AutoTokenizer would build an empty one
# from a model's config.json alone).
VOCAB_FILES = (
    "tokenizer.json",
    "vocab.json",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "vocab.txt",
)


def real_tokenizer(folder: str) -> Any:
    """``model.tiny.tokenizer``: a real checkpoint's tokenizer from a local folder, as that checkpoint ships it
    (special tokens, chat template); only a missing pad token is filled in, as for hub models."""
    path = Path(folder).expanduser()
    fix = "point it at a local folder holding a tokenizer (tokenizer.json, or vocab files and tokenizer_config.json)"
    if not path.is_dir():
        raise SumlabError(f"model.tiny.tokenizer={folder}: no such directory: {fix}, or null to train one on the data")
    if not any((path / name).is_file() for name in VOCAB_FILES):
        raise SumlabError(f"model.tiny.tokenizer={folder} holds no tokenizer (none of {', '.join(VOCAB_FILES)}): {fix}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as ex:  # transformers raises many types for files it cannot read
        raise SumlabError(
            f"model.tiny.tokenizer={folder}: cannot load its tokenizer ({type(ex).__name__}: {str(ex)[:120]}): {fix}"
        ) from None
    return pad_as_eos(tokenizer)


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
            eos_token_id=tokenizer.eos_token_id, forced_eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.eos_token_id,  # BART's (and KoBART's): decoding starts at EOS
        )  # fmt: skip
        return BartForConditionalGeneration(config)
    if arch == "pegasus":
        config = PegasusConfig(
            vocab_size=vocab, d_model=d, encoder_layers=layers, decoder_layers=layers,
            encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=tiny.d_ff,
            decoder_ffn_dim=tiny.d_ff, dropout=tiny.dropout, max_position_embeddings=tiny.max_positions,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            forced_eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,  # Pegasus has no BOS: decoding starts at the pad token
        )  # fmt: skip
        return PegasusForConditionalGeneration(config)
    if arch in ("llama", "qwen3"):  # grouped-query attention, RMSNorm, SwiGLU, rotary positions
        config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen3Config, Qwen3ForCausalLM)
        config = config_cls(
            vocab_size=vocab, hidden_size=d, intermediate_size=tiny.d_ff, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=tiny.num_kv_heads or heads, head_dim=d // heads,
            max_position_embeddings=tiny.max_positions, attention_dropout=tiny.dropout, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        return model_cls(config)
    config = GPT2Config(
        vocab_size=vocab, n_embd=d, n_layer=layers, n_head=heads, n_inner=tiny.d_ff, n_positions=tiny.max_positions,
        resid_pdrop=tiny.dropout, embd_pdrop=tiny.dropout, attn_pdrop=tiny.dropout,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return GPT2LMHeadModel(config)
