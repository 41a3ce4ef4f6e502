"""The LightningModule: loss, AdamW with warmup, and generate-then-ROUGE on validation and test."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import Any, Optional

import lightning.pytorch as L
import numpy as np
import torch
import torch.distributed as dist
from torchmetrics import MeanMetric
from transformers import GenerationConfig, get_scheduler
from transformers.trainer_pt_utils import get_parameter_names

from sumlab.family import IGNORE_INDEX, Causal, Seq2Seq, generate_texts
from sumlab.generation.beam_cache import fast_beam_cache
from sumlab.models import adapters, dropout
from sumlab.text.rouge import ROUGE_KEYS
from sumlab.train.metrics import RougeMetric

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
        multi_reference: str = "mean",
        compile: bool = False,
        rouge_remove: Sequence[str] = (),
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
        self.rouge = torch.nn.ModuleDict(
            {s: RougeMetric(rouge_tokenizer, multi_reference, rouge_remove) for s in STAGES}
        )
        # the loss kept next to ROUGE, so every metric that metrics.monitor may name is in the history
        self.eval_loss = torch.nn.ModuleDict({s: MeanMetric() for s in STAGES})
        self.val_history: list[dict[str, float]] = []  # every validation's metrics, kept in checkpoints
        self.test_metrics: dict[str, float] = {}
        self.train_tokens = 0  # this process's real (non-pad) tokens, for tokens per second
        self.train_seconds = 0.0
        # Adapter checkpoints hold only what trains; the frozen rest comes from the built model.
        self.strict_loading = not adapters.is_adapted(model)
        # torch.compile'd forward for the training loss only (generation keeps the eager model: its
        # shapes change every step and would recompile); weights are shared, and object.__setattr__ keeps
        # it out of the submodules, so state_dict and checkpoints are the same with and without it
        object.__setattr__(self, "_train_model", torch.compile(self.model) if compile else self.model)
        self._rng_to_restore: Optional[dict[str, Any]] = None

    def setup(self, stage: str) -> None:
        # transformers' attention registry is per process: a ddp_spawn rank unpickled a model set to sumlab_sdpa
        dropout.register_attention()

    # --- training -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.family.loss(self._train_model, batch, self.optim["label_smoothing"])
        self.train_tokens += self.family.tokens(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["idx"].numel())
        return loss

    def on_train_start(self) -> None:
        self._fit_started = time.perf_counter()
        # Lightning 2.6 drops a checkpoint's train-loader position when configure_optimizers asked for
        # estimated_stepping_batches (the loader was set up before the restore; Lightning issue #20550).
        # Hand it over here: our loader reads its position lazily, at the first batch, which is still ahead.
        self.trainer.fit_loop._load_combined_loader_states()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._rng_to_restore is not None:  # the first batch after a resume: continue the saved RNG streams
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

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
        # fused: one kernel for the whole update on CUDA (CPU keeps the default foreach implementation);
        # not under fp16's gradient scaler, which must unscale before clipping (Lightning refuses fused there)
        fused = bool(named) and all(p.is_cuda for _, p in named) and not str(self.trainer.precision).startswith("16")
        optimizer = torch.optim.AdamW(
            groups, lr=self.optim["lr"], betas=tuple(self.optim["betas"]), eps=self.optim["eps"], fused=fused or None
        )
        steps = int(self.trainer.estimated_stepping_batches)  # real optimizer steps: accumulation and devices counted
        scheduler = get_scheduler(
            self.optim["scheduler"], optimizer,
            num_warmup_steps=math.ceil(self.optim["warmup_ratio"] * steps), num_training_steps=steps,
        )  # fmt: skip
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- validation and test: generate, score ------------------------------------------------------
    def generate(self, batch: dict[str, Any]) -> tuple[list[str], torch.Tensor]:
        with fast_beam_cache():  # beam search without re-copying the cross-attention cache (guarded, see there)
            return generate_texts(self.family, self.model, batch, self.generation_config)

    def _eval_step(self, batch: dict[str, Any], stage: str, batch_idx: int) -> Optional[list[str]]:
        """Loss and ROUGE of a batch; its predictions, or None for a batch a rank short of one repeats."""
        # weighted by target tokens: the mean over all tokens of the split, whatever the batches; not over
        # the batches a rank short of one repeats (EvalBatchSampler), which the tokens would count twice
        loader = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        real = batch_idx < getattr(getattr(loader, "batch_sampler", None), "real_batches", batch_idx + 1)
        if real:
            tokens = (batch["labels"] != IGNORE_INDEX).sum()
            self.eval_loss[stage].update(self.family.loss(self.model, batch, 0.0), weight=tokens)
        predictions, lengths = self.generate(batch)
        self.rouge[stage].update(batch["idx"], predictions, batch["references"], lengths)
        return predictions if real else None

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        result = self.rouge[stage].compute()  # already gathered across ranks: identical everywhere
        result["loss"] = float(self.eval_loss[stage].compute())
        self.rouge[stage].reset()
        self.eval_loss[stage].reset()
        self.log_dict({f"{stage}/{k}": v for k, v in result.items() if k != "num_examples"}, prog_bar=False)
        return result

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val", batch_idx)

    def on_validation_epoch_end(self) -> None:
        result = self._eval_epoch_end("val")
        if not self.trainer.sanity_checking:
            self.val_history.append({**result, "epoch": self.current_epoch, "step": self.global_step})

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Optional[dict[str, Any]]:
        """The batch's examples with their predictions and ROUGE, for train.predictions' writer (None: a repeat)."""
        predictions = self._eval_step(batch, "test", batch_idx)
        if predictions is None:
            return None
        scores = self.rouge["test"].last_rows()[:, : len(ROUGE_KEYS)].tolist()  # scored once, by the metric
        return {"idx": batch["idx"].tolist(), "ids": batch["ids"], "predictions": predictions,
                "references": batch["references"], "scores": scores}  # fmt: skip

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
        # every rank's RNG streams (dropout masks), indexed by global rank; every rank runs this hook
        states = [get_rng_states()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, get_rng_states())
        checkpoint["sumlab_rng_states"] = states
        adapters.on_save_checkpoint(self, checkpoint)  # LoRA/QLoRA: keep only trainable tensors

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_history = checkpoint.get("sumlab_val_history", [])
        states = checkpoint.get("sumlab_rng_states")
        if states:  # applied at the next training batch, after everything a fresh process set up
            self._rng_to_restore = states[self.global_rank % len(states)]
        adapters.on_load_checkpoint(self, checkpoint)  # checks the adapter's frozen base is this one


def get_rng_states() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA RNG states as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "python": [version, list(py_state), py_gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    version, py_state, py_gauss = states["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
