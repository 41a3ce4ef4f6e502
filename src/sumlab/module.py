"""The LightningModule: loss, AdamW with warmup, and generate-then-ROUGE on validation and test."""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import lightning.pytorch as L
import torch
from torchmetrics import MeanMetric
from transformers import GenerationConfig, get_scheduler
from transformers.trainer_pt_utils import get_parameter_names

from sumlab.models import adapters
from sumlab.family import Causal, Seq2Seq, generate_texts
from sumlab.metrics import RougeMetric

# The same rule as transformers' Trainer: no weight decay on biases and any norm's weights.
NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
STAGES = {"val": "validation", "test": "test"}


class SummarizationModule(L.LightningModule):
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        family: Seq2Seq | Causal,
        generation_config: GenerationConfig,
        optim: dict[str, Any],
        rouge_tokenizer: str = "default",
        monitor: str = "val/rouge_combined",
        mode: str = "max",
    ) -> None:
        super().__init__()
        # from_pretrained returns eval mode, and Lightning keeps each module's mode: fine-tuning a hub
        # checkpoint would otherwise run with dropout off
        self.model = model.train()
        self.tokenizer = tokenizer
        self.family = family
        self.generation_config = generation_config
        self.optim = optim
        self.monitor, self.mode = monitor, mode
        self.rouge = torch.nn.ModuleDict({s: RougeMetric(rouge_tokenizer) for s in STAGES})
        # the loss kept next to ROUGE, so every metric that metrics.monitor may name is in the history
        self.eval_loss = torch.nn.ModuleDict({s: MeanMetric() for s in STAGES})
        self.val_history: list[dict[str, float]] = []  # every validation's metrics, kept in checkpoints
        self.test_metrics: dict[str, float] = {}
        self.train_tokens = 0  # this process's real (non-pad) tokens, for tokens per second
        self.train_seconds = 0.0
        # Adapter checkpoints hold only what trains; the frozen rest comes from the built model.
        self.strict_loading = not adapters.is_adapted(model)

    # --- training -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.family.loss(self.model, batch, self.optim["label_smoothing"])
        self.train_tokens += self.family.tokens(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["idx"].numel())
        return loss

    def on_train_start(self) -> None:
        self._fit_started = time.perf_counter()

    def on_train_end(self) -> None:
        self.train_seconds = time.perf_counter() - self._fit_started
        total = self.trainer.strategy.reduce(torch.tensor(float(self.train_tokens)), reduce_op="sum")
        self.train_tokens = int(total.item())

    def configure_optimizers(self) -> dict[str, Any]:
        decay = set(get_parameter_names(self.model, [torch.nn.LayerNorm], NO_DECAY_PATTERNS))
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in named if n in decay], "weight_decay": self.optim["weight_decay"]},
            {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(
            groups, lr=self.optim["lr"], betas=tuple(self.optim["betas"]), eps=self.optim["eps"]
        )
        steps = int(self.trainer.estimated_stepping_batches)  # real optimizer steps: accumulation and devices counted
        scheduler = get_scheduler(
            self.optim["scheduler"], optimizer,
            num_warmup_steps=math.ceil(self.optim["warmup_ratio"] * steps), num_training_steps=steps,
        )  # fmt: skip
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- validation and test: generate, score ------------------------------------------------------
    def generate(self, batch: dict[str, Any]) -> tuple[list[str], torch.Tensor]:
        return generate_texts(self.family, self.model, batch, self.generation_config)

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        size = batch["idx"].numel()
        self.eval_loss[stage].update(self.family.loss(self.model, batch, 0.0), weight=size)
        predictions, lengths = self.generate(batch)
        self.rouge[stage].update(batch["idx"], predictions, batch["references"], lengths)

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        result = self.rouge[stage].compute()  # already gathered across ranks: identical everywhere
        result["loss"] = float(self.eval_loss[stage].compute())
        self.rouge[stage].reset()
        self.eval_loss[stage].reset()
        self.log_dict({f"{stage}/{k}": v for k, v in result.items() if k != "num_examples"}, prog_bar=False)
        return result

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        result = self._eval_epoch_end("val")
        if not self.trainer.sanity_checking:
            self.val_history.append({**result, "epoch": self.current_epoch, "step": self.global_step})

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._eval_epoch_end("test")

    def best_validation(self, step: Optional[int] = None) -> dict[str, float]:
        """The validation at the best checkpoint's ``step``, else the one whose monitored metric was best."""
        at_step = [h for h in self.val_history if step is not None and h["step"] == step]
        if at_step:
            return at_step[-1]
        key = self.monitor.split("/", 1)[-1]
        scored = [h for h in self.val_history if key in h]
        if not scored:
            return self.val_history[-1] if self.val_history else {}
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda h: h[key])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["sumlab_val_history"] = self.val_history
        adapters.on_save_checkpoint(self, checkpoint)  # LoRA/QLoRA: keep only trainable tensors

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_history = checkpoint.get("sumlab_val_history", [])
        adapters.on_load_checkpoint(self, checkpoint)  # checks the adapter's frozen base is this one
