"""``model.fast_dropout``: dropout on CPU from a quarter of torch's random draws, training only.

Why our own: torch's CPU dropout draws one Mersenne-Twister number per element, on one thread
(``bernoulli_``), and SDPA with attention dropout falls back to its math kernel. Profiled on
``small_t5`` (2 cores, DialogSum batches of 16), that made dropout about a quarter of every training
step (BENCHMARKS.md). Here each 64-bit draw gives four 16-bit lanes; an element is dropped when its
lane is below ``t = round(p * 2**16)``, so it is dropped with probability ``t / 2**16`` (p to within
2**-17) and kept values are scaled by the exact ``2**16 / (2**16 - t)``: the same distribution as
torch's dropout, another random stream (from torch's CPU generator, so seeds, checkpointed RNG states
and gradient checkpointing's recomputation reproduce it).

Two places use it: every ``nn.Dropout`` of the model (peft's LoRA dropout included) becomes a
:class:`FastDropout`, and models whose attention goes through transformers' ``AttentionInterface`` with
``sdpa`` get ``sumlab_sdpa``: SDPA itself whenever there is no attention dropout to draw (evaluation,
generation, ``p = 0``, GPUs), else the same attention written out with the fast mask on its weights.
On GPUs and under ``torch.compile`` both are torch's own (fused) dropout.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import create_position_bias_mask, repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

LANES = 1 << 16  # values of one 16-bit lane
ATTENTION = "sumlab_sdpa"


def _on_fast_path(x: torch.Tensor, p: float, training: bool) -> bool:
    return training and 0.0 < p < 1.0 and x.device.type == "cpu" and not torch.compiler.is_compiling()


def keep_scale(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x``'s shape and dtype: 0 where dropped, ``1/(1-p')`` where kept (p' = p rounded to 2**-16)."""
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # all 64 bits uniform
    threshold = round(p * LANES)
    lanes = bits.view(torch.int16)[:n].view(x.shape)  # uniform on [-2**15, 2**15)
    # int16 -> float32 (exact, unlike bf16/fp16), then an in-place float compare: vectorized,
    # unlike a bool mask's conversions
    return lanes.to(torch.float32).ge_(threshold - LANES // 2).mul_(LANES / (LANES - threshold)).to(x.dtype)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        mask = keep_scale(x, p)
        ctx.save_for_backward(mask)  # as torch's CPU dropout keeps its scaled noise
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` with the fast mask on CPU in training; torch's own dropout everywhere else."""
    if _on_fast_path(x, p, training):
        return _Dropout.apply(x, p)
    return nn.functional.dropout(x, p, training)


class FastDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: Optional[torch.Tensor], dropout: float = 0.0, scaling: Optional[float] = None,
    is_causal: Optional[bool] = None, position_bias: Optional[torch.Tensor] = None, **kwargs: Any,
) -> tuple[torch.Tensor, None]:  # fmt: skip
    """transformers' ``sdpa_attention_forward`` semantics; dropout drawn by :func:`dropout` on CPU."""
    if not _on_fast_path(query, dropout, module.training) or kwargs.get("softcap") is not None or "s_aux" in kwargs:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
            position_bias=position_bias, **kwargs,
        )  # fmt: skip
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    q_length, kv_length = query.shape[2], key.shape[2]
    # the same mask rules as sdpa_attention_forward: a causal flag only without a mask, bias folded into the mask
    is_causal = (
        q_length > 1
        and attention_mask is None
        and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    )
    if position_bias is not None:
        attention_mask = create_position_bias_mask(position_bias, attention_mask, is_causal, query, key)
        is_causal = False
    if is_causal:  # SDPA's is_causal: aligned to the top left
        attention_mask = torch.ones(q_length, kv_length, dtype=torch.bool, device=query.device).tril()
    scores = torch.matmul(query, key.transpose(2, 3))
    if scaling != 1.0:  # T5 passes 1.0
        scores = scores * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    blind = None  # query rows that may see no key: SDPA gives them 0, not a uniform average
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        blind = ~attention_mask.any(-1, keepdim=True)
    elif attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    if blind is not None:
        weights = weights.masked_fill(blind, 0.0)
    output = torch.matmul(_Dropout.apply(weights, dropout), value)
    return output.transpose(1, 2).contiguous(), None


def register_attention() -> None:
    """Name ``attention`` in transformers' registries (per process: a ddp_spawn rank that unpickles a model set
    to it calls this too, from SummarizationModule.setup)."""
    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # masks exactly as for sdpa


def enable(model: Any) -> Any:
    """Swap in the fast dropout: the dropout modules, and SDPA attention where the model allows (in place)."""
    register_attention()
    for module in model.modules():
        if type(module) is nn.Dropout:  # exactly torch's: a subclass may mean something else
            module.__class__ = FastDropout
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under peft
    config = getattr(base, "config", None)
    if getattr(config, "_attn_implementation", None) == "sdpa" and base._can_set_attn_implementation():
        base.set_attn_implementation(ATTENTION)  # not saved: config.json keeps no attention implementation
    return model
