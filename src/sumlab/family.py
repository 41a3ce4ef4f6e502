"""Everything that differs between encoder-decoder and decoder-only summarizers, in one place.

A family turns (text, summary) into features, pads a batch, computes the training loss and generates
summaries; training and prediction build a prompt with the same ``features`` call. The LightningModule
never branches on the family; the data layer asks it for its feature columns (``feature_keys``) and, to
size token-budget batches, whether source and target are padded apart (seq2seq) or as one sequence (causal).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    DataCollatorForSeq2Seq,
    GenerationConfig,
)

from sumlab.core.errors import SumlabError
from sumlab.text.prompts import DEFAULT_SEPARATOR, TEMPLATE_DATE, TEXT_SLOT, ChatPrompt, prompt_fields

IGNORE_INDEX = -100  # label positions the loss skips (padding, and the prompt of causal models)


def _pad(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([([value] * (width - len(r)) + r) if left else (r + [value] * (width - len(r))) for r in rows])


def decode(tokenizer: Any, sequences: torch.Tensor) -> list[str]:
    # Pegasus writes sentence breaks as the literal token "<n>".
    texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
    return [t.replace("<n>", "\n").strip() for t in texts]


def generate_texts(
    family: "Seq2Seq | Causal", model: Any, batch: dict[str, Any], config: GenerationConfig
) -> tuple[list[str], torch.Tensor]:
    """Summaries for a batch, and each one's length in generated tokens (special tokens not counted)."""
    sequences = family.generate(model, batch, config)
    special = torch.tensor(sorted(set(family.tokenizer.all_special_ids)), device=sequences.device)
    return decode(family.tokenizer, sequences), (~torch.isin(sequences, special)).sum(1)


class Seq2Seq:
    name = "seq2seq"
    auto_model = AutoModelForSeq2SeqLM
    feature_keys = ("input_ids", "labels")  # (source, target) columns of the tokenized cache

    def __init__(self, tokenizer: Any, prefix: str = "") -> None:
        self.tokenizer = tokenizer
        self.prefix = prefix
        # A seq2seq model must see where source and summary end: a tokenizer that adds no EOS by itself (KoBART's)
        # gets it appended to both. One that adds nothing at all but has a BOS (KoBART's) also gets BOS before the
        # source, as the KoBART summarization checkpoints read it (<s> text </s>); the summary gets no BOS:
        # decoding starts at decoder_start_token_id (KoBART's </s>) and the first generated token is the summary's.
        probe, bos, eos = tokenizer("a")["input_ids"], tokenizer.bos_token_id, tokenizer.eos_token_id
        self._append_eos = eos is not None and probe[-1:] != [eos]
        self._source_start = [bos] if self._append_eos and bos is not None and probe[:1] != [bos] else []
        self._collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)

    def _encode(self, text: str, max_length: int, start: list[int]) -> list[int]:
        limit = max_length - len(start) - self._append_eos
        ids = self.tokenizer(text, truncation=True, max_length=limit)["input_ids"]
        return start + ids + ([self.tokenizer.eos_token_id] if self._append_eos else [])

    def features(self, text: str, summary: Optional[str], max_source: int, max_target: int,
                 fields: Optional[dict[str, Any]] = None) -> dict[str, list[int]]:  # fmt: skip
        """``fields`` (other columns) are for chat prompts; a seq2seq source is ``prefix + text``."""
        feats = {"input_ids": self._encode(self.prefix + text, max_source, self._source_start)}
        if summary is not None:
            feats["labels"] = self._encode(summary, max_target, [])
        return feats

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self._collator([{k: v for k, v in r.items() if k != "idx"} for r in rows])
        batch["idx"] = torch.tensor([r["idx"] for r in rows])
        return dict(batch)

    def loss(self, model: Any, batch: dict[str, torch.Tensor], label_smoothing: float) -> torch.Tensor:
        labels = batch["labels"]
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=decoder_input_ids
        ).logits
        return F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing
        )

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Real (non-padding) tokens the model processed: source plus summary."""
        return int(batch["attention_mask"].sum() + (batch["labels"] != IGNORE_INDEX).sum())

    def generate(self, model: Any, batch: dict[str, torch.Tensor], config: GenerationConfig) -> torch.Tensor:
        return model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], generation_config=config
        )


class Causal:
    """Decoder-only: ``prompt + summary + end token`` in one sequence; the loss covers the summary and that token.

    The prompt is ``prefix + text + separator`` (GPT-2 style), or with ``chat`` the tokenizer's chat template
    rendered for a system and a user turn, ending in the assistant header (Qwen3's thinking off). Long
    dialogues are cut from their start, never the template around them. The loss mask is built from
    positions, not from the pad id: GPT-2's pad token *is* its EOS, so a pad-based mask would also hide
    the EOS the model must learn to emit. With ``packing`` (see :meth:`_pack`) several examples share a row,
    positions restarting per example, which transformers' attention masks turn into block-diagonal
    attention (see :func:`check_packing`).
    """

    name = "causal"
    auto_model = AutoModelForCausalLM
    feature_keys = ("prompt_ids", "target_ids")

    def __init__(self, tokenizer: Any, prefix: str = "", separator: str = DEFAULT_SEPARATOR,
                 chat: Optional[ChatPrompt] = None, packing: bool = False) -> None:  # fmt: skip
        self.tokenizer = tokenizer
        self.prefix = prefix
        self.separator_ids = tokenizer(separator, add_special_tokens=False)["input_ids"]
        self.chat = chat
        self.stop_ids: list[int] = []
        self.end_id = tokenizer.eos_token_id
        if chat is not None:
            self._check_chat(chat)
            self.stop_ids = end_of_turn_ids(tokenizer, chat.end_of_turn) or [tokenizer.eos_token_id]
            self.end_id = self.stop_ids[0]
        self._parts: dict[
            tuple, tuple[list[int], list[int]]
        ] = {}  # rendered template around the dialogue, per field values
        self.packing = packing

    # --- prompts -------------------------------------------------------------------------------------
    def _check_chat(self, chat: ChatPrompt) -> None:
        if not getattr(self.tokenizer, "chat_template", None):
            raise SumlabError(
                f"model.chat_template=true, but the tokenizer {getattr(self.tokenizer, 'name_or_path', '')!r} has no "
                "chat template: set model.chat_template=false (separator prompts), or use an instruct model"
            )
        self.fields = prompt_fields(chat.user)  # the other columns the prompt names

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _chat_parts(self, fields: Optional[dict[str, Any]]) -> tuple[list[int], list[int]]:
        """Token ids of the rendered chat prompt before and after the dialogue (cached per other-field values)."""
        missing = [f for f in self.fields if fields is None or f not in fields]
        if missing:
            columns = sorted(fields) if fields else []
            raise SumlabError(
                f"model.prompt.user placeholder {{{missing[0]}}} is not a column of the data "
                f"(it has {columns or 'only {text}'}): "
                "use {text} or one of its columns"
            )
        values = tuple(str(fields[f]) for f in self.fields) if self.fields else ()
        parts = self._parts.get(values)
        if parts is None:
            user = self.chat.user.format(text=TEXT_SLOT, **dict(zip(self.fields, values)))
            messages = [{"role": "system", "content": self.chat.system}] if self.chat.system else []
            rendered = self.tokenizer.apply_chat_template(
                [*messages, {"role": "user", "content": user}], tokenize=False, add_generation_prompt=True,
                enable_thinking=False,  # Qwen3 / EXAONE 4: answer directly (other templates ignore the flag)
                date_string=TEMPLATE_DATE,  # Llama 3.x writes "Today Date" into the system turn: the same every day
            )  # fmt: skip
            head, found, tail = rendered.partition(TEXT_SLOT)
            if not found:
                raise SumlabError(
                    "the tokenizer's chat template drops the user turn's text: use model.chat_template=false"
                )
            parts = (self._encode(head), self._encode(tail))
            if len(self._parts) < 4096:  # bounded: fields such as a topic repeat, ids do not
                self._parts[values] = parts
        return parts

    def prompt_ids(self, text: str, max_source: int, fields: Optional[dict[str, Any]] = None) -> list[int]:
        """The prompt for ``text``: the same for training and prediction; the dialogue's start is cut to fit."""
        if self.chat is None:
            prompt = self._encode(self.prefix + text)
            return prompt[-max(1, max_source - len(self.separator_ids)) :] + self.separator_ids  # keep the end
        head, tail = self._chat_parts(fields)
        budget = max_source - len(head) - len(tail)
        if budget < 1:
            raise SumlabError(
                f"data.max_source_length={max_source} leaves no room for the dialogue after the chat template's "
                f"{len(head) + len(tail)} tokens: raise data.max_source_length"
            )
        return head + self._encode(text.strip())[-budget:] + tail

    def features(self, text: str, summary: Optional[str], max_source: int, max_target: int,
                 fields: Optional[dict[str, Any]] = None) -> dict[str, list[int]]:  # fmt: skip
        """``fields``: the example's other columns, for ``{column}`` placeholders of model.prompt.user."""
        feats = {"prompt_ids": self.prompt_ids(text, max_source, fields)}
        if summary is not None:
            target = self._encode(summary.strip() if self.chat else summary)[: max_target - 1]
            feats["target_ids"] = target + [self.end_id]
        return feats

    # --- batches, loss, generation ---------------------------------------------------------------------
    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        prompts = [r["prompt_ids"] for r in rows]
        # Generation input: prompts left-padded so every new token is appended right after its prompt.
        batch = {
            "prompt_ids": _pad(prompts, pad, left=True),
            "prompt_mask": _pad([[1] * len(p) for p in prompts], 0, left=True),
            "idx": torch.tensor([r["idx"] for r in rows]),
        }
        if "target_ids" in rows[0]:
            full = [r["prompt_ids"] + r["target_ids"] for r in rows]
            labels = [[IGNORE_INDEX] * len(r["prompt_ids"]) + r["target_ids"] for r in rows]
            if self.packing:
                batch.update(self._pack(full, labels))
            else:
                batch["input_ids"] = _pad(full, pad)
                batch["attention_mask"] = _pad([[1] * len(f) for f in full], 0)
                batch["labels"] = _pad(labels, IGNORE_INDEX)
        return batch

    def _pack(self, full: list[list[int]], labels: list[list[int]]) -> dict[str, torch.Tensor]:
        """Examples packed first-fit-decreasing into rows no longer than the batch's longest example.

        transformers isolates packed examples by their restarting ``position_ids`` (masking_utils'
        packed-sequence detection, used when no 2D attention mask is given). Rows are bounded, not the whole
        batch in one row as ``DataCollatorWithFlattening`` makes it: with sdpa or eager attention a row costs
        the square of its length, so one row of a whole batch would cost far more than the padding it saves.
        A row's tail padding is one more sequence (positions from 0) that nothing attends to and the loss skips.
        """
        width = max(len(f) for f in full)
        rows: list[list[int]] = []  # example indices per row
        used: list[int] = []
        for i in sorted(range(len(full)), key=lambda i: -len(full[i])):
            row = next((r for r in range(len(rows)) if used[r] + len(full[i]) <= width), None)
            if row is None:
                rows.append([])
                used.append(0)
                row = len(rows) - 1
            rows[row].append(i)
            used[row] += len(full[i])
        ids, targets, positions, real = [], [], [], []
        for row, size in zip(rows, used, strict=True):
            tail = width - size
            ids.append([t for i in row for t in full[i]] + [self.tokenizer.pad_token_id] * tail)
            targets.append([t for i in row for t in labels[i]] + [IGNORE_INDEX] * tail)
            positions.append([p for i in row for p in range(len(full[i]))] + list(range(tail)))
            real.append([1] * size + [0] * tail)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(targets),
                "position_ids": torch.tensor(positions), "packed_mask": torch.tensor(real)}  # fmt: skip

    def loss(self, model: Any, batch: dict[str, torch.Tensor], label_smoothing: float) -> torch.Tensor:
        targets = batch["labels"][:, 1:]  # position t predicts token t + 1
        answer = targets != IGNORE_INDEX
        # use_cache=False: no KV cache to build; and with one, transformers would not read packed positions
        inputs = {"input_ids": batch["input_ids"], "use_cache": False}
        if "position_ids" in batch:  # packed: no 2D mask, so transformers isolates examples by their positions
            inputs["position_ids"] = batch["position_ids"]
        else:
            inputs["attention_mask"] = batch["attention_mask"]
        with _output_layer_at(model, answer) as selected:
            logits = model(**inputs).logits
        logits = logits[0] if selected else logits[:, :-1][answer]
        return F.cross_entropy(logits.float(), targets[answer], label_smoothing=label_smoothing)

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum() if "attention_mask" in batch else batch["packed_mask"].sum())

    def generate(self, model: Any, batch: dict[str, torch.Tensor], config: GenerationConfig) -> torch.Tensor:
        eos = config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos])
        if any(i not in eos for i in self.stop_ids):  # stop at any end-of-turn token, whatever the config says
            config = copy.deepcopy(config)
            config.eos_token_id = eos + [i for i in self.stop_ids if i not in eos]
        out = model.generate(
            input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], generation_config=config
        )[:, batch["prompt_ids"].shape[1] :]  # only the new tokens
        if self.stop_ids:  # the answer only: an end-of-turn token that is not a special token must not be decoded
            out = out.masked_fill(
                torch.isin(out, torch.tensor(self.stop_ids, device=out.device)), self.tokenizer.pad_token_id
            )
        return out


@contextlib.contextmanager
def _output_layer_at(model: Any, keep: torch.Tensor) -> Iterator[bool]:
    """Within the block, the model's output layer sees only the hidden states at ``keep`` (B, T - 1): the model
    returns logits of shape (1, keep.sum(), vocab); yields whether it does.

    Only the answer's positions have a loss, and the prompt is most of a chat example (DialogSum: ~35 answer
    tokens in ~290): projecting every position onto a 49k-150k vocabulary, and casting those logits to float32,
    is a large share of a LoRA step that this skips. The model's own forward still runs around the layer
    (final soft-capping, logit scaling). A torch.compile'd model keeps full logits: a hook added per step would
    make it recompile every step.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or hasattr(model, "_orig_mod"):  # no separate output layer, or compiled
        yield False
        return

    def select(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][:, :-1][keep].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield True
    finally:
        handle.remove()


def check_packing(model: Any) -> None:
    """Refuse data.packing when this model's attention lets packed examples see each other.

    transformers builds block-diagonal causal masks from restarting ``position_ids`` (sdpa, eager, flex;
    flash attention uses them directly), but not every architecture or attention implementation goes
    through those masks. So: one packed forward of two short random examples must give the second one
    the logits it gets alone.
    """
    g = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().weight.shape[0]
    first, second = torch.randint(vocab, (1, 6), generator=g), torch.randint(vocab, (1, 5), generator=g)
    device = model.get_input_embeddings().weight.device
    positions = torch.cat([torch.arange(6), torch.arange(5)]).unsqueeze(0)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(input_ids=second.to(device), use_cache=False).logits.float()
            packed = model(
                input_ids=torch.cat([first, second], 1).to(device), position_ids=positions.to(device), use_cache=False
            ).logits
    finally:
        model.train(training)
    if not torch.allclose(packed[:, 6:].float(), alone, rtol=1e-3, atol=1e-4 * float(alone.abs().max()) + 1e-6):
        impl = getattr(model.config, "_attn_implementation", None)
        raise SumlabError(
            f"data.packing=true: {type(model).__name__} with attention {impl!r} lets packed examples attend to each "
            "other here (positions do not isolate them): set data.packing=false"
        )


def end_of_turn_ids(tokenizer: Any, tokens: Any) -> list[int]:
    """The ids of model.end_of_turn tokens; one that is not in the vocabulary is an error, never skipped."""
    ids = []
    for token in tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
            raise SumlabError(
                f"model.end_of_turn token {token!r} is not in the tokenizer's vocabulary: name the chat template's "
                "end-of-turn token"
            )
        ids.append(token_id)
    return ids


FAMILIES = {"seq2seq": Seq2Seq, "causal": Causal}


def make_family(name: str, tokenizer: Any, prefix: str, separator: str = DEFAULT_SEPARATOR,
                chat: Optional[ChatPrompt] = None, packing: bool = False) -> Seq2Seq | Causal:  # fmt: skip
    """The family named by model.family; ``separator``, ``chat`` and ``packing`` are causal-only settings."""
    if name != "causal":
        return Seq2Seq(tokenizer, prefix=prefix)
    return Causal(tokenizer, prefix=prefix, separator=separator, chat=chat, packing=packing)
