"""The old keys: found by name wherever they sit, made canonical, and what each means in sumlab.

Teams nest the same Hugging Face names differently (``training.learning_rate``, ``train.args.learning_rate``,
a flat ``learning_rate``), so a key is found by its name; the nearest enclosing section decides the few names
whose meaning depends on it (``batch_size`` under training or inference). Two keys that mean the same thing with
different values, or a name that needs a section and has none, are refused with one line: guessing would
silently train something else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from sumlab.core.errors import SumlabError

# section names as teams write them -> the section they are
SECTIONS = {"general": "general", "model": "model", "tokenizer": "tokenizer", "training": "training",
            "train": "training", "trainer": "training", "training_args": "training", "inference": "generation",
            "generation": "generation", "generate": "generation", "predict": "generation", "qlora": "qlora",
            "lora": "qlora", "peft": "qlora", "quantization": "qlora", "wandb": "wandb", "meta": "meta",
            "data": "data"}  # fmt: skip

# old name -> canonical name (Hugging Face's where it has one)
ALIASES = {
    "model_name": "checkpoint", "model_name_or_path": "checkpoint", "checkpoint": "checkpoint",
    "pretrained_model_name_or_path": "checkpoint", "architecture": "architecture", "arch": "architecture",
    "data_path": "data_path", "data_dir": "data_path", "output_dir": "output_dir", "seed": "seed", "device": "device",
    "encoder_max_len": "max_source_length", "max_source_length": "max_source_length",
    "max_input_length": "max_source_length", "decoder_max_len": "max_target_length",
    "max_target_length": "max_target_length", "bos_token": "bos_token", "eos_token": "eos_token",
    "special_tokens": "special_tokens", "additional_special_tokens": "special_tokens",
    "learning_rate": "learning_rate", "lr": "learning_rate",
    "per_device_train_batch_size": "per_device_train_batch_size", "train_batch_size": "per_device_train_batch_size",
    "per_device_eval_batch_size": "per_device_eval_batch_size", "eval_batch_size": "per_device_eval_batch_size",
    "num_train_epochs": "num_train_epochs", "epochs": "num_train_epochs", "max_steps": "max_steps",
    "warmup_ratio": "warmup_ratio", "warmup_steps": "warmup_steps", "weight_decay": "weight_decay",
    "lr_scheduler_type": "lr_scheduler_type", "gradient_accumulation_steps": "gradient_accumulation_steps",
    "fp16": "fp16", "bf16": "bf16", "gradient_checkpointing": "gradient_checkpointing",
    "group_by_length": "group_by_length", "eval_steps": "eval_steps", "eval_strategy": "eval_strategy",
    "evaluation_strategy": "eval_strategy", "save_total_limit": "save_total_limit",
    "early_stopping_patience": "early_stopping_patience", "early_stopping_threshold": "early_stopping_threshold",
    "label_smoothing_factor": "label_smoothing_factor", "label_smoothing": "label_smoothing_factor",
    "report_to": "report_to", "max_grad_norm": "max_grad_norm", "adam_beta1": "adam_beta1",
    "adam_beta2": "adam_beta2", "adam_epsilon": "adam_epsilon", "optim": "optim", "logging_steps": "logging_steps",
    "dataloader_num_workers": "dataloader_num_workers", "metric_for_best_model": "metric_for_best_model",
    "greater_is_better": "greater_is_better", "torch_compile": "torch_compile", "disable_tqdm": "disable_tqdm",
    "generation_num_beams": "num_beams", "generation_max_length": "gen_max_length",
    "num_beams": "num_beams", "no_repeat_ngram_size": "no_repeat_ngram_size", "length_penalty": "length_penalty",
    "repetition_penalty": "repetition_penalty", "generate_max_length": "gen_max_length",
    "max_new_tokens": "max_new_tokens", "min_length": "min_length", "min_new_tokens": "min_new_tokens",
    "do_sample": "do_sample", "top_k": "top_k", "top_p": "top_p", "temperature": "temperature",
    "remove_tokens": "remove_tokens", "use_qlora": "use_qlora", "use_lora": "use_lora",
    "load_in_4bit": "load_in_4bit", "load_in_8bit": "load_in_8bit", "lora_rank": "lora_rank", "lora_r": "lora_rank",
    "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout", "target_modules": "lora_target_modules",
    "lora_target_modules": "lora_target_modules", "use_unsloth": "use_unsloth",
    "bnb_4bit_quant_type": "bnb_4bit_quant_type", "bnb_4bit_compute_dtype": "bnb_4bit_compute_dtype",
    "bnb_4bit_use_double_quant": "bnb_4bit_use_double_quant", "project": "wandb_project",
    "wandb_project": "wandb_project", "entity": "wandb_entity", "wandb_entity": "wandb_entity",
    "experiment_name": "experiment_name", "description": "description",
}  # fmt: skip
# names whose meaning depends on their section; a name with several meanings and no section is refused
SECTIONED = {
    "batch_size": {"training": "per_device_train_batch_size", "generation": "inference_batch_size"},
    "max_length": {"tokenizer": "max_source_length", "generation": "gen_max_length", "training": "gen_max_length"},
    "name": {"wandb": "wandb_name", "meta": "experiment_name"},
    "mode": {"wandb": "wandb_mode"},
    "tags": {"wandb": "wandb_tags"},
    "group": {"wandb": "wandb_group"},
    "early_stopping": {"generation": "early_stopping"},
    "r": {"qlora": "lora_rank"},
    "alpha": {"qlora": "lora_alpha"},
    "dropout": {"qlora": "lora_dropout"},
}

# canonical name -> (sumlab key, a note where the meaning differs): a value that carries over as it is
SIMPLE = {
    "learning_rate": ("optim.lr", ""),
    "weight_decay": ("optim.weight_decay", ""),
    "warmup_ratio": ("optim.warmup_ratio", ""),
    "label_smoothing_factor": ("optim.label_smoothing", ""),
    "adam_epsilon": ("optim.eps", ""),
    "max_grad_norm": ("trainer.gradient_clip_val", ""),
    "per_device_train_batch_size": (
        "data.batch_size",
        "per device, as HF's: the effective batch is data.batch_size x trainer.accumulate_grad_batches x devices",
    ),
    "per_device_eval_batch_size": ("data.eval_batch_size", "per device: validation and test batches"),
    "gradient_accumulation_steps": ("trainer.accumulate_grad_batches", ""),
    "max_source_length": ("data.max_source_length", ""),
    "max_target_length": ("data.max_target_length", ""),
    "dataloader_num_workers": ("data.num_workers", ""),
    "group_by_length": ("data.group_by_length", ""),
    "gradient_checkpointing": ("model.gradient_checkpointing", ""),
    "torch_compile": ("model.compile", ""),
    "seed": ("seed", ""),
    "logging_steps": ("trainer.log_every_n_steps", ""),
    "num_beams": ("generation.num_beams", ""),
    "no_repeat_ngram_size": ("generation.no_repeat_ngram_size", ""),
    "length_penalty": ("generation.length_penalty", ""),
    "repetition_penalty": ("generation.repetition_penalty", ""),
    "early_stopping": ("generation.early_stopping", ""),
    "do_sample": ("generation.do_sample", ""),
    "top_k": ("generation.top_k", ""),
    "top_p": ("generation.top_p", ""),
    "temperature": ("generation.temperature", ""),
    "max_new_tokens": ("generation.max_new_tokens", ""),
    "min_new_tokens": ("generation.min_new_tokens", ""),
    "early_stopping_patience": (
        "callbacks.early_stopping.patience",
        "counted in validations, as HF counts evaluations",
    ),
    "early_stopping_threshold": ("callbacks.early_stopping.min_delta", ""),
    "save_total_limit": (
        "callbacks.model_checkpoint.save_top_k",
        "HF keeps the N most recent checkpoints (and the best); sumlab keeps the N best on metrics.monitor, "
        "plus checkpoints/last.ckpt to resume from",
    ),
    "lora_rank": ("qlora.r", ""),
    "lora_alpha": ("qlora.alpha", ""),
    "lora_dropout": ("qlora.dropout", ""),
    "lora_target_modules": ("qlora.target_modules", ""),
    "bnb_4bit_quant_type": ("qlora.quant_type", ""),
    "bnb_4bit_use_double_quant": ("qlora.double_quant", ""),
    "bnb_4bit_compute_dtype": ("qlora.compute_dtype", ""),
    "wandb_project": ("logger.wandb.project", ""),
    "wandb_entity": ("logger.wandb.entity", ""),
    "wandb_name": ("logger.wandb.name", ""),
    "wandb_tags": ("logger.wandb.tags", ""),
    "wandb_group": ("logger.wandb.group", ""),
}

# canonical name -> why it has no sumlab value
NOT_MAPPED = {
    "output_dir": "sumlab gives every run its own directory under paths.output_dir (env SUMLAB_OUTPUT_DIR)",
    "overwrite_output_dir": "a run never overwrites another: each gets a new directory",
    "logging_dir": "logs stay in the run directory (and go wherever the logger group sends them)",
    "logging_strategy": "sumlab logs every trainer.log_every_n_steps steps and after each validation",
    "save_strategy": "sumlab keeps the best checkpoint on metrics.monitor (callbacks.model_checkpoint) and "
    "checkpoints/last.ckpt (callbacks.last_checkpoint)",
    "save_steps": "checkpoints/last.ckpt is rewritten every callbacks.last_checkpoint.every_n_train_steps steps",
    "do_train": "HF's Trainer ignores it (a script read it); sumlab's train / test keys decide what runs",
    "do_eval": "HF's Trainer ignores it (a script read it); sumlab validates to pick the best checkpoint",
    "do_predict": "HF's Trainer ignores it (a script read it); sumlab's test key scores the test split",
    "bos_token": "sumlab keeps the model tokenizer's own BOS (added by the tokenizer where the model uses one); "
    "writing it into the text, as the baseline did, makes the model see it twice",
    "eos_token": "sumlab keeps the model tokenizer's own EOS, appended to every target",
    "ckt_path": "a prediction setting: python predict.py model_dir=<run dir or export/>",
    "result_path": "predict.py writes predictions.jsonl (output.format=csv adds the CSV) under output.dir",
    "inference_batch_size": "predict.py's batch_size (python predict.py ... batch_size=N); validation batches are "
    "data.eval_batch_size",
    "resume_from_checkpoint": "ckpt_path=last (or a .ckpt of a sumlab run): HF checkpoint folders are not "
    "Lightning checkpoints",
    "run_name": "run_name is the experiment's name; the wandb name comes from wandb.name",
    "push_to_hub": "sumlab exports the best checkpoint to <run>/export; upload it with huggingface-cli",
    "hub_model_id": "sumlab exports the best checkpoint to <run>/export; upload it with huggingface-cli",
    "remove_unused_columns": "sumlab reads only data.text_column, summary_column, id_column and named columns",
    "dataloader_pin_memory": "Lightning decides pinning",
    "ddp_find_unused_parameters": "trainer.strategy=ddp_find_unused_parameters_true if you need it",
    "fp16_full_eval": "evaluation runs in trainer.precision",
    "save_safetensors": "exports are safetensors",
    "prediction_loss_only": "sumlab always generates on validation and scores ROUGE",
    "include_inputs_for_metrics": "sumlab's ROUGE needs no inputs",
}
SAME_AS_SUMLAB = {
    "predict_with_generate": "sumlab always generates on validation",
    "load_best_model_at_end": "sumlab tests and exports the best checkpoint",
}


@dataclass
class Leaf:
    path: str  # where it sat in the old file: "training.learning_rate"
    value: Any
    name: str  # canonical name; "" for a key no table knows


def _leaves(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in node.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


def section_of(path: tuple[str, ...]) -> Optional[str]:
    """The nearest enclosing section (the key's own name excluded)."""
    return next((SECTIONS[p.lower()] for p in reversed(path[:-1]) if p.lower() in SECTIONS), None)


def canonical(path: tuple[str, ...]) -> str:
    """The key's canonical name; "" when no table knows it. Refuses a sectioned name that has no section."""
    name, section = path[-1].lower(), section_of(path)
    if section == "meta":
        return f"meta:{name}"  # every meta key becomes a header comment
    if name in SECTIONED:
        meanings = SECTIONED[name]
        if section in meanings:
            return meanings[section]
        if section is None and len(meanings) > 1:
            where = " or ".join(f"{'inference' if s == 'generation' else s}.{name}" for s in meanings)
            raise SumlabError(
                f"{'.'.join(path)} is ambiguous ({where}?): put it under the section it belongs to and migrate again"
            )
        return ""
    return ALIASES.get(name, name if name in NOT_MAPPED or name in SAME_AS_SUMLAB else "")


class Found:
    """The old file's keys by canonical name; each mapping step takes what it uses, the rest is reported."""

    def __init__(self, old: dict[str, Any]) -> None:
        self.by_name: dict[str, Leaf] = {}
        self.unknown: list[Leaf] = []
        for path, value in _leaves(old):
            leaf = Leaf(".".join(path), value, canonical(path))
            if not leaf.name:
                self.unknown.append(leaf)
            elif leaf.name in self.by_name:
                self._merge(self.by_name[leaf.name], leaf)
            else:
                self.by_name[leaf.name] = leaf

    @staticmethod
    def _merge(first: Leaf, again: Leaf) -> None:
        """The same setting twice: one value is fine (both keys are named), two values are refused."""
        if first.value != again.value:
            raise SumlabError(
                f"{first.path}={first.value!r} and {again.path}={again.value!r} set the same thing to different "
                "values: keep one and migrate again"
            )
        first.path = f"{first.path} = {again.path}"

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def take(self, name: str) -> Optional[Leaf]:
        """The key, marked as used (None when the file does not have it)."""
        return self.by_name.pop(name, None)

    def peek(self, name: str, default: Any = None) -> Any:
        """The key's value without using it."""
        leaf = self.by_name.get(name)
        return default if leaf is None else leaf.value

    def names(self) -> list[str]:
        return list(self.by_name)


_METRIC_PREFIX = re.compile(r"^(eval|val|validation|valid|dev)[/_.]")
MONITORS = {"rouge1": "rouge1", "rouge2": "rouge2", "rougel": "rougeL", "rougelsum": "rougeLsum", "loss": "loss",
            "rougecombined": "rouge_combined", "rougeavg": "rouge_combined", "rougemean": "rouge_combined",
            "rougesum": "rouge_combined", "rougetotal": "rouge_combined", "genlen": "gen_len"}  # fmt: skip


def monitor_of(metric: str) -> Optional[str]:
    """An HF/wandb metric name (eval/rouge-1, eval_rougeL, rouge1_f, eval_loss) -> sumlab's val/<key>, or None."""
    key = re.sub(r"[-_/.\s]", "", _METRIC_PREFIX.sub("", str(metric).strip().lower()))
    for suffix in ("fmeasure", "f1", "f"):
        if key not in MONITORS and key.endswith(suffix) and key[: -len(suffix)] in MONITORS:
            key = key[: -len(suffix)]
    return f"val/{MONITORS[key]}" if key in MONITORS else None
