"""Training with and without ``data.packing``: tiny_llama, chat-template prompts (the LLM rows of `make bench-train`).

The same examples, in the same batches, through ``family.collate`` and ``family.loss`` + backward, as
``training_step`` runs them: unpacked (each batch padded to its longest example) against packed (rows
first-fit up to the batch's longest example, positions restarting per example). Reported per mode: real
(non-padding) training tokens per second, the share of padding in what the model processed, and the mean
loss (equal up to float rounding, since packing isolates examples). The two modes alternate ``--repeats``
times and medians are compared, so a burst of load on the machine cannot decide the ratio.

    .venv/bin/python benchmarks/bench_train.py --sections llm [--packing-examples 256] [--packing-repeats 3]
    .venv/bin/python benchmarks/bench_packing.py [--examples 256] [--batch-size 16] [--repeats 3]  # these rows alone

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


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """This benchmark's options; bench_train.py adds them with prefix ``packing-``."""
    parser.add_argument(f"--{prefix}examples", dest="packing_examples", type=int, default=256, help="training examples")
    parser.add_argument(f"--{prefix}batch-size", dest="packing_batch_size", type=int, default=16)
    parser.add_argument(f"--{prefix}repeats", dest="packing_repeats", type=int, default=3, help="alternations")


def run(args: argparse.Namespace) -> float:
    """Prints the table; returns the packed / unpacked ratio of median real training tokens/s."""
    n_examples, batch_size, repeats = args.packing_examples, args.packing_batch_size, args.packing_repeats
    import lightning.pytorch as L
    from hydra import compose, initialize_config_dir

    import sumlab
    from sumlab.data.sources import load_split
    from sumlab.family import make_family
    from sumlab.train.runner import build_module, load_splits

    sumlab.setup()
    data = ["data=dialogsum", f"data.dir={DIALOGSUM}"] if (DIALOGSUM / "train.jsonl").is_file() else ["data=synthetic"]
    overrides = ["model=tiny_llama", *data, f"data.max_train_samples={n_examples}", "model.tiny.dropout=0.0",
                 f"data.synthetic_sizes.train={n_examples}", "paths.run_dir=/tmp/sumlab-bench-packing"]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    L.seed_everything(0)
    splits = load_splits(cfg)
    module, _, _ = build_module(cfg, {"train": splits["train"], "validation": splits["validation"][:1]})
    plain = module.family
    packed = make_family("causal", module.tokenizer, "", "", chat=plain.chat, packing=True)
    examples = load_split(cfg.data, "train", seed=cfg.seed, cache_dir=cfg.paths.cache_dir, keep_columns=True)
    rows = [{"idx": i, **plain.features(e["text"], e["summary"], cfg.data.max_source_length, cfg.data.max_target_length,
                                        fields=e.get("fields"))}
            for i, e in enumerate(examples)]  # fmt: skip
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    model = module.model.train()

    def one_pass(family) -> tuple[float, float, float]:
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
    for _ in range(repeats):
        for name, family in (("unpacked", plain), ("packed", packed)):
            results[name].append(one_pass(family))
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or 'cpu'}; "
        f"data: {cfg.data.name}, {len(rows)} examples, batch {batch_size}, d_model {cfg.model.tiny.d_model}"
    )
    print("| mode | real tokens/s (median, min-max) | padding share | mean loss |")
    print("|---|---|---|---|")
    medians = {}
    for name, runs in results.items():
        speeds = [r[0] for r in runs]
        medians[name] = statistics.median(speeds)
        print(
            f"| {name} | {medians[name]:,.0f} ({min(speeds):,.0f}-{max(speeds):,.0f}) | "
            f"{runs[0][1]:.1%} | {runs[0][2]:.6f} |"
        )
    speedup = medians["packed"] / medians["unpacked"]
    print(f"packing speedup vs unpacked: {speedup:.2f}x")
    return speedup


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(cli)
    run(cli.parse_args())
