"""Training with and without ``data.packing``: tiny_llama, chat-template prompts (`make bench-packing`).

The baseline is what training runs by default: the batches of sumlab's own training sampler
(``data.group_by_length=true``: ``LengthGroupedBatchSampler``, taken from the data module's train loader),
each padded to its longest example. Against it, the same batches packed (``data.packing=true``: rows
first-fit up to the batch's longest example, positions restarting per example), which is what a user who
turns packing on gets. File-order batches (no length grouping), unpacked and packed, are a second pair of
rows: the baseline an earlier version of this script measured against, which no default run uses.

Each row runs the same examples through ``family.collate`` and ``family.loss`` + backward, as
``training_step`` does. Reported per row: real (non-padding) training tokens per second, the share of
padding in what the model processed, and the mean loss (equal between packed and unpacked up to float
rounding, since packing isolates examples). Every row runs once untimed (warm-up), then ``--repeats``
times; the row order rotates on each repeat so a slow spell of the machine hits every row alike; medians
with min-max ranges are reported. The last line reads ``packing speedup vs length-grouped batches:
<ratio>x (...)``: packed / unpacked, both on the default length-grouped batches.

    .venv/bin/python benchmarks/bench_packing.py [--examples 256] [--batch-size 16] [--repeats 3]
    .venv/bin/python benchmarks/bench_train.py --sections llm [--packing-examples 256] [--packing-repeats 3]

DialogSum train (``../shared/data/dialogsum``) when present, else the synthetic dialogues.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from figures import machine, median_range, ratio  # this directory is on sys.path when a script here runs

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM = REPO.parent / "shared" / "data" / "dialogsum"
BASELINE, PACKED = "length-grouped, unpacked", "length-grouped, packed"


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """This benchmark's options; bench_train.py adds them with prefix ``packing-``."""
    parser.add_argument(f"--{prefix}examples", dest="packing_examples", type=int, default=256, help="training examples")
    parser.add_argument(f"--{prefix}batch-size", dest="packing_batch_size", type=int, default=16)
    parser.add_argument(f"--{prefix}repeats", dest="packing_repeats", type=int, default=3, help="timed runs per row")


def prepare(n_examples: int, batch_size: int):
    """(config, model, unpacked family, packed family, tokenized rows, {batch order name: index lists})."""
    import lightning.pytorch as L
    from hydra import compose, initialize_config_dir

    import sumlab
    from sumlab.data.datamodule import FEATURE_KEYS
    from sumlab.family import make_family
    from sumlab.train.runner import build_module, load_splits

    sumlab.setup()
    data = ["data=dialogsum", f"data.dir={DIALOGSUM}"] if (DIALOGSUM / "train.jsonl").is_file() else ["data=synthetic"]
    overrides = ["model=tiny_llama", *data, f"data.max_train_samples={n_examples}", "model.tiny.dropout=0.0",
                 f"data.synthetic_sizes.train={n_examples}", f"data.batch_size={batch_size}", "data.max_eval_samples=8",
                 "paths.run_dir=/tmp/sumlab-bench-packing"]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    L.seed_everything(0)
    splits = load_splits(cfg)
    module, datamodule, _ = build_module(cfg, {"train": splits["train"], "validation": splits["validation"]})
    datamodule.prepare_data()  # the tokenized cache training reads
    datamodule.setup("fit")
    plain = module.family
    packed = make_family("causal", module.tokenizer, "", "", chat=plain.chat, packing=True)
    rows = [{k: r[k] for k in ("idx", *FEATURE_KEYS) if k in r} for r in datamodule.tokenized("train")]
    n = len(rows)
    orders = {
        "length-grouped": list(datamodule.train_dataloader().batch_sampler),  # epoch 0 of the run's own sampler
        "file order": [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)],
    }
    return cfg, module.model.train(), plain, packed, rows, orders


def run(args: argparse.Namespace) -> float:
    """Prints the table; returns the packed / unpacked ratio of median real training tokens/s on grouped batches."""
    n_examples, batch_size, repeats = args.packing_examples, args.packing_batch_size, args.packing_repeats
    cfg, model, plain, packed, rows, orders = prepare(n_examples, batch_size)

    def one_pass(family, batches: list[list[int]]) -> tuple[float, float, float]:
        real = processed = 0
        losses = []
        started = time.perf_counter()
        for indices in batches:
            batch = family.collate([rows[i] for i in indices])
            loss = family.loss(model, batch, 0.0)
            loss.backward()
            model.zero_grad(set_to_none=True)
            losses.append(loss.item())
            real += family.tokens(batch)
            processed += batch["input_ids"].numel()
        return real / (time.perf_counter() - started), 1 - real / processed, statistics.mean(losses)

    variants = {f"{order}, {mode}": (family, batches) for order, batches in orders.items()
                for mode, family in (("unpacked", plain), ("packed", packed))}  # fmt: skip
    names = list(variants)
    for name in names:
        one_pass(*variants[name])  # warm-up: allocator, thread pool, kernels; not timed
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:  # rotated order
            results[name].append(one_pass(*variants[name]))
    print(f"data: {cfg.data.name}, {len(rows)} examples, batch {batch_size}, tiny_llama d_model "
          f"{cfg.model.tiny.d_model}; 1 warm-up + {repeats} timed runs per row, order rotated")  # fmt: skip
    print("| batches, mode | real tokens/s: median (min-max) | padding share | mean loss |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {median_range([r[0] for r in runs], 0)} | {runs[0][1]:.1%} | {runs[0][2]:.6f} |")
    speeds = {name: [r[0] for r in runs] for name, runs in results.items()}
    print(f"length-grouped vs file-order batches, unpacked: {ratio(speeds[BASELINE], speeds['file order, unpacked'])}")
    print(f"packing speedup vs length-grouped batches: {ratio(speeds[PACKED], speeds[BASELINE])}; {machine()}")
    return statistics.median(speeds[PACKED]) / statistics.median(speeds[BASELINE])


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(cli)
    run(cli.parse_args())
