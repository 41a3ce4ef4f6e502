"""Training with and without ``data.packing`` (`make bench-packing`): tiny_llama, chat-template prompts.

The same examples, in the same batches, through ``family.collate`` and ``family.loss`` + backward, as
``training_step`` runs them: unpacked (each batch padded to its longest example) against packed (the batch
in one row, positions restarting per example). Reported per mode: real (non-padding) training tokens
per second, the share of padding in what the model processed, and the mean loss (equal up to float
rounding, since packing isolates examples). The two modes alternate ``--repeats`` times and medians are
compared, so a burst of load on the machine cannot decide the ratio.

    .venv/bin/python benchmarks/bench_packing.py [--examples 256] [--batch-size 16] [--repeats 3]

DialogSum train (``../shared/data/dialogsum``) when present, else the synthetic dialogues.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM = REPO.parent / "shared" / "data" / "dialogsum"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import lightning.pytorch as L
    from hydra import compose, initialize_config_dir

    import sumlab
    from sumlab.family import make_family
    from sumlab.train import build_module, load_splits

    sumlab.setup()
    data = ["data=dialogsum", f"data.dir={DIALOGSUM}"] if (DIALOGSUM / "train.jsonl").is_file() else ["data=synthetic"]
    overrides = ["model=tiny_llama", *data, f"data.max_train_samples={args.examples}", "model.tiny.dropout=0.0",
                 f"data.synthetic_sizes.train={args.examples}", "paths.run_dir=/tmp/sumlab-bench-packing"]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    L.seed_everything(0)
    splits = load_splits(cfg)
    module, _, _ = build_module(cfg, {"train": splits["train"], "validation": splits["validation"][:1]})
    plain = module.family
    packed = make_family("causal", module.tokenizer, "", "", chat=plain.chat, packing=True)
    rows = [{"idx": i, **plain.features(e["text"], e["summary"], cfg.data.max_source_length, cfg.data.max_target_length)}
            for i, e in enumerate(splits["train"])]  # fmt: skip
    batches = [rows[i : i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
    model = module.model.train()

    def run(family) -> tuple[float, float, float]:
        real = processed = 0
        losses = []
        started = time.perf_counter()
        for chunk in batches:
            batch = family.collate(chunk)
            loss = family.loss(model, batch, 0.0)
            loss.backward()
            model.zero_grad(set_to_none=True)
            losses.append(loss.item())
            real += family.tokens(batch)
            processed += batch["input_ids"].numel()
        return real / (time.perf_counter() - started), 1 - real / processed, statistics.mean(losses)

    results: dict[str, list[tuple[float, float, float]]] = {"unpacked": [], "packed": []}
    for _ in range(args.repeats):
        for name, family in (("unpacked", plain), ("packed", packed)):
            results[name].append(run(family))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or 'cpu'}; "
          f"data: {cfg.data.name}, {len(rows)} examples, batch {args.batch_size}, d_model {cfg.model.tiny.d_model}")  # fmt: skip
    print("| mode | real tokens/s (median, min-max) | padding share | mean loss |")
    print("|---|---|---|---|")
    medians = {}
    for name, runs in results.items():
        speeds = [r[0] for r in runs]
        medians[name] = statistics.median(speeds)
        print(f"| {name} | {medians[name]:,.0f} ({min(speeds):,.0f}-{max(speeds):,.0f}) | {runs[0][1]:.1%} | {runs[0][2]:.6f} |")
    print(f"packing speedup vs unpacked: {medians['packed'] / medians['unpacked']:.2f}x")


if __name__ == "__main__":
    main()
