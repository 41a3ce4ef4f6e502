"""Memory: full fine-tuning vs LoRA vs QLoRA (`make bench-memory`), on a t5-base-sized model built from config.

Random weights are fine for memory. The base is saved once, then each method runs in its own process,
loading it the way sumlab loads a local model (``from_pretrained``; QLoRA with ``quantization_config``),
so each process's peak RSS is its own. Reported per method: peak RSS (CPU) or
``torch.cuda.max_memory_allocated`` (GPU), trainable parameters, checkpoint size (trainable tensors plus
optimizer state, as sumlab's checkpoints hold) and median step time.

    python benchmarks/bench_memory.py                 # t5-base-sized, CPU
    python benchmarks/bench_memory.py --size large    # t5-large-sized (GPU: add --device cuda)

One process per method, measured once: peak memory is a property of the run, not a timing, so it is given
without a spread; step times are the median (min-max) of the steps after the first. Last line:
``memory: QLoRA peak <q>% of full fine-tuning, LoRA <l>% (...); <machine>``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import machine, median_range  # this directory is on sys.path when a script here runs

SIZES = {  # T5Config keywords of the real checkpoints' shapes
    "small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8),
    "base": dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
    "large": dict(d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_heads=16),
}
METHODS = ("none", "lora", "qlora")


def make_base(size: str, path: Path) -> None:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=32128, decoder_start_token_id=0, **SIZES[size])
    T5ForConditionalGeneration(config).save_pretrained(path)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(method: str, base: Path, device: str, steps: int, batch: int, source: int, target: int) -> dict:
    import psutil
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForSeq2SeqLM

    from sumlab.config.schema import enabled
    from sumlab.models import adapters

    qlora = OmegaConf.create({"method": method, "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": None,
                              "modules_to_save": None, "train_new_tokens": True, "bias": "none", "quant_type": "nf4",
                              "double_quant": True, "compute_dtype": "auto"})  # fmt: skip
    model_cfg = OmegaConf.create({"name_or_path": str(base), "family": "seq2seq", "tiny": None, "revision": None,
                                  "trust_remote_code": False, "gradient_checkpointing": False})  # fmt: skip
    accelerator = "gpu" if device == "cuda" else "cpu"
    kwargs = adapters.load_kwargs(qlora, accelerator)
    started = time.perf_counter()
    model = AutoModelForSeq2SeqLM.from_pretrained(base, **kwargs)
    if enabled(qlora):
        model = adapters.apply(model, None, qlora, model_cfg, 0, kwargs)
    if not adapters.is_quantized(model):
        model.to(device)
    load_seconds = time.perf_counter() - started
    loaded_rss = psutil.Process().memory_info().rss / 2**20
    load_peak = peak_rss_mib()  # loading's own peak (from_pretrained, quantization)
    trainable, total = adapters.trainable_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(2, 32000, (batch, source), generator=g).to(device)
    labels = torch.randint(2, 32000, (batch, target), generator=g).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    )
    model.train()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        with autocast:
            loss = model(input_ids=inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    state = adapters.checkpoint_state(model, model.state_dict()) if adapters.is_adapted(model) else model.state_dict()
    with tempfile.NamedTemporaryFile(suffix=".ckpt") as f:
        torch.save({"state_dict": state, "optimizer_states": [optimizer.state_dict()]}, f.name)
        ckpt_bytes = os.path.getsize(f.name)
    result = {
        "method": method, "device": device, "trainable_params": trainable, "total_params": total,
        "peak_rss_mib": round(peak_rss_mib(), 1), "rss_after_load_mib": round(loaded_rss, 1),
        "peak_rss_load_mib": round(load_peak, 1), "checkpoint_mib": round(ckpt_bytes / 2**20, 2),
        "step_seconds": round(statistics.median(times[1:] or times), 3), "step_times": times[1:] or times,
        "load_seconds": round(load_seconds, 2),
        "loss": round(loss.item(), 3),
    }  # fmt: skip
    if device == "cuda":
        result["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def table(rows: list[dict], gpu: bool) -> str:
    full = rows[0]
    mem_key = "cuda_max_allocated_mib" if gpu else "peak_rss_mib"
    head = (
        "| method | peak memory (MiB) | vs full | after load (MiB) | trainable params | checkpoint (MiB) | "
        "step s: median (min-max) |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = {"none": "full fine-tuning", "lora": "LoRA r=16", "qlora": "QLoRA r=16 (4-bit NF4)"}[r["method"]]
        lines.append(
            f"| {name} | {r[mem_key]:,.0f} | {100 * r[mem_key] / full[mem_key]:.0f}% | "
            f"{r['rss_after_load_mib']:,.0f} | "
            f"{r['trainable_params']:,} ({100 * r['trainable_params'] / r['total_params']:.2f}%) | "
            f"{r['checkpoint_mib']:,.2f} | {median_range(r['step_times'])} |"
        )
    return "\n".join(lines)


NAMES = {"none": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}


def figure_line(rows: list[dict], gpu: bool, steps: int) -> str:
    """Each adapter method's peak memory as a share of the first row's (full fine-tuning by default)."""
    key = "cuda_max_allocated_mib" if gpu else "peak_rss_mib"
    shares = [f"{NAMES[r['method']]} peak {100 * r[key] / rows[0][key]:.0f}%" for r in rows[1:]]
    return (f"memory: {', '.join(shares) or 'one method only'} of {NAMES[rows[0]['method']]} ({key}; one process "
            f"per method, measured once: no spread; {steps} steps each); {machine()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--source", type=int, default=128)
    parser.add_argument("--target", type=int, default=32)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--_one", help=argparse.SUPPRESS)  # internal: measure one method in this process
    parser.add_argument("--_base", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one:
        result = measure(args._one, args._base, args.device, args.steps, args.batch, args.source, args.target)
        print("RESULT " + json.dumps(result))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="sumlab-bench-") as tmp:
        base = Path(tmp) / "base"
        make_base(args.size, base)  # in this process: each measured process below starts clean
        for method in args.methods:
            cmd = [sys.executable, __file__, "--_one", method, "--_base", str(base), "--device", args.device,
                   "--steps", str(args.steps), "--batch", str(args.batch), "--source", str(args.source),
                   "--target", str(args.target)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{method} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(line[len("RESULT ") :]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nt5-{args.size}-sized model (random weights), batch {args.batch} x {args.source} source / {args.target} "
          f"target tokens, AdamW, device {args.device}\n")  # fmt: skip
    print(table(rows, args.device == "cuda"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(figure_line(rows, args.device == "cuda", args.steps))


if __name__ == "__main__":
    main()
