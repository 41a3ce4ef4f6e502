"""A team's own training config (Hugging Face Seq2SeqTrainingArguments names in sections, or flat) -> the plan of
conf/experiment/NAME.yaml: the presets it picks (model, data, logger, qlora), then each value, converted where
sumlab counts differently (max_length, eval_steps, warmup_steps, fp16 on T5), then what is left, with reasons."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from sumlab.config.schema import ROUGE_MONITORS, DataConfig, enum_value
from sumlab.core.errors import SumlabError
from sumlab.migrate.conf import Conf
from sumlab.migrate.keys import NOT_MAPPED, SAME_AS_SUMLAB, SIMPLE, Found, Leaf, monitor_of
from sumlab.migrate.plan import Plan

# model.architecture -> the preset of that architecture (its family, prefix, recipe and safe precisions)
ARCHITECTURES = {"bart": "bart_base", "kobart": "kobart", "t5": "t5_base", "mt5": "mt5_base",
                 "flan-t5": "flan_t5_base", "gpt2": "gpt2", "kogpt2": "kogpt2"}  # fmt: skip
GUESS_ORDER = ("kobart", "kogpt2", "flan-t5", "mt5", "t5", "bart", "gpt2")  # in a hub name, most specific first
# transformers.get_scheduler names that need no arguments beyond warmup and total steps (what sumlab passes)
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")  # fmt: skip
COMPETITION_FILES = ("train.csv", "dev.csv", "test.csv")  # the Korean competition's, as data=korean_dialogue reads
LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")  # sumlab's logger presets
ADAMW = ("adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw")
ADAPTER_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules", "bnb_4bit_quant_type",
                "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype")  # fmt: skip


def migrate_config(old: dict[str, Any], conf: Conf, name: str, origin: str) -> Plan:
    found = Found(old)
    plan = Plan("experiment", name, origin)
    _meta(found, plan)
    _model(found, plan, conf)
    _data(found, plan)
    _logger(found, plan)
    _adapters(found, plan)
    base = conf.compose(plan.overrides())  # the config without the values: deltas are measured against it
    _precision(found, plan, base)
    _length(found, plan)
    _schedule(found, plan, base)
    _validation(found, plan)
    _generation(found, plan, str(enum_value(base.model.family)))
    _metrics(found, plan)
    _training_extras(found, plan, base)
    for key, (target, note) in SIMPLE.items():
        if leaf := found.take(key):
            plan.set(target, leaf.value, leaf.path, note)
    _rest(found, plan)
    plan.set("run_name", name, "the experiment's name (run directories and logger runs are named after it)")
    plan.drop_defaults(base)
    return plan


def _meta(found: Found, plan: Plan) -> None:
    for key in [k for k in found.names() if k.startswith("meta:")] + ["experiment_name", "description"]:
        if leaf := found.take(key):
            plan.header.append(f"{leaf.path}: {leaf.value}")


# --- presets: model, data, logger, adapters --------------------------------------------------------------------


def _model(found: Found, plan: Plan, conf: Conf) -> None:
    """A preset with the same hub name, else the architecture's preset with the checkpoint swapped in."""
    checkpoint, arch = found.take("checkpoint"), found.take("architecture")
    if checkpoint is None and arch is None:
        return
    hub = str(checkpoint.value) if checkpoint else None
    preset = _preset_for(hub, conf.model_presets()) if hub else None
    if preset:
        plan.use("/model", preset, checkpoint.path, f"the preset that loads {hub}")
        if arch:
            plan.keep(arch, f"the {preset} preset knows its architecture")
        return
    kind, guessed = _architecture(arch, hub)
    like = ARCHITECTURES[kind]
    if hub is None:
        plan.use("/model", like, arch.path, f"architecture {kind} without a checkpoint: the {like} preset")
        return
    how = f"architecture guessed from the name ({kind})" if guessed else f"{arch.path}={arch.value}"
    plan.use("/model", like, how, f"no preset loads {hub}: the {like} preset's settings (family, prefix, "
             "learning rate, safe precisions) with that checkpoint")  # fmt: skip
    plan.set("model.name_or_path", hub, checkpoint.path)
    plan.set("model.name", re.sub(r"[^A-Za-z0-9_.-]+", "_", hub.rstrip("/").rsplit("/", 1)[-1]), checkpoint.path)


def _preset_for(hub: str, presets: dict[str, str]) -> Optional[str]:
    key = hub.lower().rstrip("/")
    if key in presets:
        return presets[key]
    # a legacy name without its organisation: t5-base is google-t5/t5-base
    hits = {preset for name, preset in presets.items() if name.rsplit("/", 1)[-1] == key}
    return hits.pop() if len(hits) == 1 else None


def _architecture(arch: Optional[Leaf], hub: Optional[str]) -> tuple[str, bool]:
    """(architecture, whether it was guessed from the hub name); refuses when neither says it."""
    if arch is not None:
        kind = str(arch.value).lower().replace("_", "-")
        if kind in ARCHITECTURES:
            return kind, False
    name = (hub or "").lower().replace("_", "-")
    guess = next((kind for kind in GUESS_ORDER if kind in name), None)
    if guess is None:
        given = f"{arch.path}={arch.value} is not one of {', '.join(ARCHITECTURES)}" if arch else "no architecture"
        raise SumlabError(
            f"cannot tell which kind of model {hub} is ({given}): set model.architecture in the old file to one of "
            f"{', '.join(ARCHITECTURES)}, or add a conf/model preset for it, and migrate again"
        )
    return guess, True


def _data(found: Found, plan: Plan) -> None:
    if leaf := found.take("data_path"):
        plan.use("/data", "korean_dialogue", leaf.path,
                 "the competition's layout: train.csv, dev.csv and test.csv with fname, dialogue, summary")  # fmt: skip
        directory = Path(str(leaf.value)).expanduser()
        missing = [f for f in COMPETITION_FILES if directory.is_dir() and not (directory / f).is_file()]
        note = "relative to the directory you run train.py from"
        if missing:
            note += f"; not found there from here: {', '.join(missing)} (set data.*_file)"
        plan.set("data.dir", str(leaf.value), leaf.path, note)
    if leaf := found.take("special_tokens"):
        _tags(leaf, plan)


def _tags(leaf: Leaf, plan: Plan) -> None:
    """A list of added tokens -> data.special_tokens (sumlab adds the tags it finds in the data, by a pattern)."""
    if isinstance(leaf.value, bool):
        plan.set("data.special_tokens", leaf.value, leaf.path)
        return
    if not isinstance(leaf.value, list) or not all(isinstance(t, str) for t in leaf.value):
        plan.skip(leaf, "expected a list of tokens")
        return
    pattern = DataConfig.special_token_pattern
    others = [t for t in leaf.value if not re.fullmatch(pattern, t)]
    plan.set("data.special_tokens", True, leaf.path,
             "each tag found in the data by data.special_token_pattern becomes one token (tags never in the data "
             "are not added)")  # fmt: skip
    if others:
        plan.set("data.special_token_pattern", "|".join([pattern, *map(re.escape, others)]), leaf.path,
                 f"the default pattern (#Name#) extended to {others}")  # fmt: skip


def _logger(found: Found, plan: Plan) -> None:
    """report_to -> logger presets; the wandb section -> logger.wandb.* (only where wandb is one of them)."""
    report = found.take("report_to")
    wandb_keys = [k for k in found.names() if k.startswith("wandb_")]
    names = _report_names(report, bool(wandb_keys))
    loggers = [n for n in names if n in LOGGERS]
    if report and not set(names) <= {*LOGGERS, "none"}:
        plan.skip(report, f"sumlab's logger presets are {', '.join(LOGGERS)}; the others have no preset")
    if loggers and loggers != ["csv"]:
        note = "wandb's API key comes from `wandb login` or WANDB_API_KEY, never from a config"
        plan.use("/logger", loggers[0] if len(loggers) == 1 else loggers, report.path if report else "the wandb "
                 "section", note if "wandb" in loggers else "")  # fmt: skip
    elif report and set(names) <= {"none", "csv"}:
        plan.keep(report, "sumlab keeps a CSV log (logger=csv) and metrics.json in the run directory")
    if "wandb" not in loggers:
        for key in wandb_keys:
            plan.skip(found.take(key), "report_to does not include wandb")
    elif mode := found.take("wandb_mode"):
        if mode.value == "offline":
            plan.set("logger.wandb.offline", True, mode.path)
        else:
            plan.set("logger.wandb.mode", mode.value, mode.path, "passed to wandb.init")


def _report_names(report: Optional[Leaf], wandb_section: bool) -> list[str]:
    """HF's report_to as lower-case names; without it, a wandb section means wandb."""
    if report is None:
        return ["wandb"] if wandb_section else []
    values = [report.value] if isinstance(report.value, str) else list(report.value or [])
    return [str(v).lower() for v in values]


def _adapters(found: Found, plan: Plan) -> None:
    flags = {k: found.take(k) for k in ("use_qlora", "use_lora", "load_in_4bit", "load_in_8bit")}
    if unsloth := found.take("use_unsloth"):
        if unsloth.value:
            plan.skip(unsloth, "unsloth is not supported: sumlab's LoRA/QLoRA is peft + bitsandbytes (the qlora "
                      "group), without unsloth's kernels")  # fmt: skip
        else:
            plan.keep(unsloth, "sumlab never uses unsloth")
    on = {k: bool(v.value) for k, v in flags.items() if v is not None}
    method = "none"
    if on.get("use_qlora") or on.get("use_lora") or on.get("load_in_4bit") or on.get("load_in_8bit"):
        quantized_4 = on.get("load_in_4bit", bool(on.get("use_qlora")))
        method = "lora_8bit" if on.get("load_in_8bit") else "qlora" if quantized_4 else "lora"
    given = [leaf for leaf in flags.values() if leaf is not None]
    if method == "none":
        for leaf in given:
            plan.keep(leaf, "no adapters: every weight trains (qlora=none)")
        for key in ADAPTER_KEYS:
            if leaf := found.take(key):
                plan.skip(leaf, "adapters are off in the old file")
        return
    plan.use("/qlora", method, " + ".join(leaf.path for leaf in given),
             {"qlora": "LoRA on a 4-bit NF4 base (bitsandbytes)", "lora": "LoRA on a full-precision base",
              "lora_8bit": "LoRA on an 8-bit base"}[method])  # fmt: skip
    if dtype := found.take("bnb_4bit_compute_dtype"):
        plan.set("qlora.compute_dtype", str(dtype.value).removeprefix("torch."), dtype.path)


# --- values that sumlab counts differently -----------------------------------------------------------------------


def _precision(found: Found, plan: Plan, base: DictConfig) -> None:
    fp16, bf16 = found.take("fp16"), found.take("bf16")
    given = [leaf for leaf in (fp16, bf16) if leaf is not None]
    if not given:
        return
    source = " + ".join(leaf.path for leaf in given)
    if bf16 is not None and bf16.value:
        plan.set("trainer.precision", "bf16-mixed", source)
    elif fp16 is not None and fp16.value:
        if "16-mixed" in base.model.safe_precisions:
            plan.set("trainer.precision", "16-mixed", source)
        else:
            plan.set("trainer.precision", "bf16-mixed", source,
                     f"fp16 overflows {base.model.name_or_path}'s activations (T5 family: inf/NaN losses), so "
                     "bf16-mixed instead: it needs an Ampere or newer GPU (else trainer.precision=32)")  # fmt: skip
    else:
        plan.set(
            "trainer.precision",
            "32",
            source,
            "both off: HF trained in float32 (sumlab's default, auto, would pick bf16-mixed on a GPU that has it)",
        )


def _length(found: Found, plan: Plan) -> None:
    epochs, steps = found.take("num_train_epochs"), found.take("max_steps")
    if steps is not None and int(steps.value) > 0:
        plan.set("trainer.max_steps", int(steps.value), steps.path, "optimizer steps, as HF's")
        plan.set("trainer.max_epochs", None, steps.path, "HF's max_steps wins over num_train_epochs: no epoch limit")
        if epochs is not None:
            plan.skip(epochs, "max_steps is set, and wins in HF")
        return
    if steps is not None:
        plan.keep(steps, "no step limit")
    if epochs is not None:
        value = float(epochs.value)
        note = "" if value.is_integer() else (
            f"HF stops {value} epochs in, within the last; Lightning counts whole epochs, so rounded up "
            "(set trainer.max_steps to stop mid-epoch)")  # fmt: skip
        plan.set("trainer.max_epochs", math.ceil(value), epochs.path, note)


def _schedule(found: Found, plan: Plan, base: DictConfig) -> None:
    if leaf := found.take("lr_scheduler_type"):
        name = str(leaf.value).lower().removeprefix("schedulertype.")
        if name in SCHEDULERS:
            plan.set("optim.scheduler", name, leaf.path)
        else:
            plan.skip(leaf, f"sumlab's schedules are transformers.get_scheduler's {', '.join(SCHEDULERS)}")
    steps = found.take("warmup_steps")
    if steps is None:
        return
    if not steps.value:
        plan.keep(steps, "no warmup steps (HF then uses warmup_ratio)")
        return
    if ratio := found.take("warmup_ratio"):
        plan.skip(ratio, "warmup_steps is set too, and wins in HF")
    total, how = _total_steps(found, plan, base)
    if total is None:
        plan.skip(steps, "sumlab warms up a fraction of the optimizer steps: set optim.warmup_ratio to "
                  f"warmup_steps / the run's optimizer steps ({how})")  # fmt: skip
        return
    plan.set("optim.warmup_ratio", round(min(int(steps.value) / total, 0.5), 4), steps.path,
             f"sumlab warms up a fraction of the optimizer steps: {steps.value} of about {total} ({how})")  # fmt: skip


def _total_steps(found: Found, plan: Plan, base: DictConfig) -> tuple[Optional[int], str]:
    """The old run's optimizer steps, counted from its training file where it is here; else (None, why not)."""
    if entry := plan.values.get(("trainer", "max_steps")):
        return int(entry.value), "max_steps"
    directory = plan.values.get(("data", "dir"))
    path = Path(str(directory.value)).expanduser() / str(base.data.train_file) if directory else None
    if path is None or not path.is_file() or path.suffix.lower() != ".csv":
        return None, "the training data was not found here to count them"
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = max(sum(1 for _ in csv.reader(f)) - 1, 0)
    batch = int(found.peek("per_device_train_batch_size", base.data.batch_size))
    accumulation = int(found.peek("gradient_accumulation_steps", 1))
    epochs_entry = plan.values.get(("trainer", "max_epochs"))
    epochs = int(epochs_entry.value) if epochs_entry else int(base.trainer.max_epochs)
    per_epoch = max(math.ceil(rows / batch) // accumulation, 1)  # HF's count: whole accumulations per epoch
    how = f"{rows} rows of {path.name}, batch {batch}, accumulation {accumulation}, {epochs} epochs, one device"
    return per_epoch * epochs, how


def _validation(found: Found, plan: Plan) -> None:
    strategy, steps = found.take("eval_strategy"), found.take("eval_steps")
    kind = str(strategy.value).lower().removeprefix("intervalstrategy.") if strategy else None
    if kind == "steps" and steps is not None and isinstance(steps.value, int):
        accumulation = int(found.peek("gradient_accumulation_steps", 1))
        plan.set("trainer.val_check_interval", steps.value * accumulation, f"{strategy.path} + {steps.path}",
                 "HF counts optimizer steps, Lightning's val_check_interval counts training batches: eval_steps x "
                 f"gradient_accumulation_steps ({accumulation}), counted across epochs")  # fmt: skip
        plan.set("trainer.check_val_every_n_epoch", None, steps.path, "so that val_check_interval spans epochs")
        return
    if kind == "steps":
        plan.skip(strategy, "set trainer.val_check_interval (training batches between validations)")
    elif kind == "epoch":
        plan.keep(strategy, "sumlab validates after every epoch (trainer.check_val_every_n_epoch=1)")
    elif strategy is not None:
        plan.skip(strategy, "sumlab validates to choose the best checkpoint; trainer.check_val_every_n_epoch "
                  "spaces validations out")  # fmt: skip
    if steps is not None:
        plan.skip(steps, "HF uses it only with eval_strategy=steps (and an integer)")


def _generation(found: Found, plan: Plan, family: str) -> None:
    if length := found.take("gen_max_length"):
        value = int(length.value)
        if "max_new_tokens" in found:
            plan.skip(length, "max_new_tokens is set too, and wins in HF")
        elif family == "causal":
            plan.set("generation.max_new_tokens", value, length.path,
                     "HF's max_length counted the prompt too (decoder-only): sumlab's max_new_tokens counts the "
                     "summary only, so this is an upper bound; lower it toward data.max_target_length")  # fmt: skip
        else:
            plan.set("generation.max_new_tokens", value - 1, length.path,
                     f"HF's max_length={value} counts the decoder's start token: at most {value - 1} new tokens, "
                     "which is what max_new_tokens counts")  # fmt: skip
    if minimum := found.take("min_length"):
        if family == "causal" or "min_new_tokens" in found:
            plan.skip(minimum, "HF's min_length counted the prompt too: set generation.min_new_tokens")
        else:
            plan.set("generation.min_new_tokens", max(int(minimum.value) - 1, 0), minimum.path,
                     "HF's min_length counts the decoder's start token")  # fmt: skip


def _metrics(found: Found, plan: Plan) -> None:
    if remove := found.take("remove_tokens"):
        plan.set(
            "metrics.remove_tokens",
            list(remove.value),
            remove.path,
            "replaced by a space in predictions and references before ROUGE, as the baseline's compute_metrics",
        )
        plan.set("metrics.tokenizer", "rouge_pkg", remove.path,
                 "removing these is how the competition's baseline scores, with the `rouge` package: rouge_pkg "
                 "reproduces it (kiwi scores Korean morphemes instead; README: ROUGE)")  # fmt: skip
    metric, greater = found.take("metric_for_best_model"), found.take("greater_is_better")
    monitor = monitor_of(metric.value) if metric else None
    if metric and monitor is None:
        plan.skip(metric, f"not a metric sumlab logs: metrics.monitor is val/ + one of {', '.join(ROUGE_MONITORS)}")
    elif metric:
        summed = "sum" in str(metric.value).lower() or "total" in str(metric.value).lower()
        plan.set("metrics.monitor", monitor, metric.path,
                 "the mean of rouge1, rouge2 and rougeL: the sum / 3, the same ranking" if summed else "")  # fmt: skip
    if greater is not None:
        plan.set("metrics.mode", "max" if greater.value else "min", greater.path)
    elif monitor:
        plan.set("metrics.mode", "min" if monitor == "val/loss" else "max", metric.path,
                 "HF's default greater_is_better: lower is better for a loss")  # fmt: skip


def _training_extras(found: Found, plan: Plan, base: DictConfig) -> None:
    """Optimizer, device and progress bar: values that change shape on the way."""
    betas = {i: found.take(k) for i, k in enumerate(("adam_beta1", "adam_beta2"))}
    if any(betas.values()):
        value = [float(b.value) if b else float(base.optim.betas[i]) for i, b in betas.items()]
        plan.set("optim.betas", value, " + ".join(b.path for b in betas.values() if b))
    if optimizer := found.take("optim"):
        if str(optimizer.value).lower() in ADAMW:
            plan.keep(optimizer, "sumlab trains with torch's AdamW")
        else:
            plan.skip(optimizer, "sumlab trains with torch's AdamW; other optimizers have no key")
    if device := found.take("device"):
        _device(device, plan)
    if tqdm := found.take("disable_tqdm"):
        plan.set("trainer.enable_progress_bar", not tqdm.value, tqdm.path)


def _device(leaf: Leaf, plan: Plan) -> None:
    kind, _, index = str(leaf.value).lower().partition(":")
    accelerator = {"cuda": "gpu", "gpu": "gpu", "cpu": "cpu", "mps": "mps", "auto": "auto"}.get(kind)
    if accelerator is None:
        plan.skip(leaf, "not a device sumlab knows: set trainer.accelerator (gpu, cpu, mps, auto)")
        return
    plan.set("trainer.accelerator", accelerator, leaf.path)
    if index.isdigit():
        plan.set("trainer.devices", [int(index)], leaf.path, "that one GPU")


def _rest(found: Found, plan: Plan) -> None:
    for key in found.names():
        leaf = found.take(key)
        if key in SAME_AS_SUMLAB:
            plan.keep(leaf, SAME_AS_SUMLAB[key])
        else:
            plan.skip(leaf, NOT_MAPPED.get(key, "sumlab has no such setting"))
    for leaf in found.unknown:
        plan.skip(leaf, "unknown key: no sumlab setting matches it")
