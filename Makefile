# mtkit: set-up, tests and experiment recipes. `make demo` and `make test` work on a fresh clone.
#
#   make demo DATA=path/to/fra-eng.zip     preprocess → train → translate → evaluate ($(RECIPE))
#   make test                               the fast test suite (CI runs this)
#   make test-slow DATA=...                 the longer checks on the real corpus (minutes each)
#   make d2l DATA=...                       the book's exact run and its four example sentences
#   make recipe-NAME DATA=...               the pipeline for recipes/NAME.toml
#   make install-browser                    Debian's chromium, for the browser test of `mtkit serve`
#
# DATA empty means: download the book's fra-eng.zip (cached under ~/.cache/mtkit).

PYTHON ?= python3
VENV ?= $(or $(VIRTUAL_ENV),.venv)
BIN := $(VENV)/bin
MTKIT := $(BIN)/mtkit
DATA ?=
RECIPE ?= recipes/gru-attention.toml
WORK ?= work
SRC ?= en
TGT ?= fr
NAME = $(basename $(notdir $(RECIPE)))
# No CUDA here: take PyTorch's CPU build instead of PyPI's multi-GB CUDA one.
TORCH_CPU = torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu --retries 1

.PHONY: install install-browser test test-slow demo d2l pipeline clean

install: $(VENV)/.mtkit-installed

$(VENV)/.mtkit-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "torch already installed: $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(BIN)/pip install "torch>=2.4"; \
	else \
	  $(BIN)/pip install $(TORCH_CPU); \
	fi
	$(BIN)/pip install -e '.[dev]'
	touch $@

# The browser test of the page at / drives Debian's chromium with Playwright; without it the
# test is skipped, saying why. Needs root and apt-get; does nothing where chromium exists.
install-browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "install-browser: could not install chromium; the browser test will be skipped"; \
	else echo "install-browser: no chromium and no root apt-get; the browser test will be skipped"; fi

test: install
	MTKIT_TEST_DATA="$(DATA)" $(BIN)/python -m pytest -q -m "not slow"

test-slow: install
	MTKIT_TEST_DATA="$(DATA)" $(BIN)/python -m pytest -q -m slow

# preprocess → train → translate → evaluate, for $(RECIPE), into $(WORK)/$(NAME)/
pipeline: install
	$(MTKIT) preprocess $(DATA) --recipe $(RECIPE) --out $(WORK)/$(NAME)/data --force
	$(MTKIT) train --recipe $(RECIPE) --data $(WORK)/$(NAME)/data --out $(WORK)/$(NAME)/run --force
	$(MTKIT) translate --model $(WORK)/$(NAME)/run $(WORK)/$(NAME)/data/test.$(SRC) -o $(WORK)/$(NAME)/test.hyp
	@echo "sample translations:"; paste $(WORK)/$(NAME)/data/test.$(SRC) $(WORK)/$(NAME)/test.hyp | head -5
	$(MTKIT) evaluate --hyp $(WORK)/$(NAME)/test.hyp --ref $(WORK)/$(NAME)/data/test.refs.jsonl

demo: pipeline

recipe-%:
	$(MAKE) pipeline RECIPE=recipes/$*.toml

# The chapter's run: 512 training pairs, num_steps 9, 30 epochs; then its four examples.
d2l: install
	$(MTKIT) preprocess $(DATA) --recipe recipes/d2l.toml --out $(WORK)/d2l/data --force
	$(MTKIT) train --recipe recipes/d2l.toml --data $(WORK)/d2l/data --out $(WORK)/d2l/run --force
	printf "go .\ni lost .\nhe's calm .\ni'm home .\n" > $(WORK)/d2l/examples.en
	printf "va !\nj'ai perdu .\nil est calme .\nje suis chez moi .\n" > $(WORK)/d2l/examples.fr
	$(MTKIT) translate --model $(WORK)/d2l/run --checkpoint last $(WORK)/d2l/examples.en --tokenized -o $(WORK)/d2l/examples.hyp
	$(MTKIT) evaluate --hyp $(WORK)/d2l/examples.hyp --ref $(WORK)/d2l/examples.fr \
	  --src $(WORK)/d2l/examples.en --book-bleu --book-bleu-k 2

clean:
	rm -rf $(WORK) .pytest_cache

# -- benchmarks: the scripts behind the README's figures (each prints its table) -------------
BENCH ?= $(WORK)/bench
BENCH_RECIPES ?= recipes/d2l-full.toml recipes/gru.toml recipes/lstm.toml recipes/gru-luong.toml \
	recipes/bilstm-attention.toml recipes/gru-attention.toml
MODEL ?= $(BENCH)/recipes/gru-attention
DATA_DIR ?= $(BENCH)/recipes/data-gru

PEERS_VENV ?= $(WORK)/peers-venv
BUDGET ?=
QUICK ?=

.PHONY: bench-recipes bench-train bench-decode bench-stream bench-serve bench-peers bench-scale gpu-check bench-domain bench-ensemble

bench-recipes: install  # about 70 minutes: each recipe trains for its 10-minute budget (REUSE=1 scores finished runs)
	$(BIN)/python benchmarks/recipes.py $(if $(DATA),--data $(DATA)) --work $(BENCH)/recipes $(BENCH_RECIPES) $(if $(REUSE),--reuse)

bench-train: install  # the book's model (word vocabulary, fp32 and bf16) and the best recipe
	$(MTKIT) preprocess $(DATA) --recipe recipes/d2l-full.toml --out $(BENCH)/book-data --force > /dev/null
	$(BIN)/python benchmarks/train_speed.py --data $(BENCH)/book-data --recipe recipes/d2l-full.toml --batch-tokens 1500
	$(MTKIT) preprocess $(DATA) --recipe $(RECIPE) --out $(BENCH)/recipe-data --force > /dev/null
	$(BIN)/python benchmarks/train_speed.py --data $(BENCH)/recipe-data --recipe $(RECIPE) --batch-tokens 2500

bench-decode: install  # needs a trained model: MODEL=RUN_DIR DATA_DIR=DATA_DIR
	$(BIN)/python benchmarks/decode.py --model $(MODEL) --data $(DATA_DIR)

bench-stream: install
	$(BIN)/python benchmarks/stream_memory.py --model $(MODEL) --data $(DATA_DIR)

# `mtkit serve` under 1, 8 and 64 concurrent clients, greedy and beam 5, batching on and off,
# against offline translation of the same sentences (about 8 minutes with LOAD_SECONDS=30).
LOAD_SECONDS ?= 30
bench-serve: install
	$(BIN)/python benchmarks/serve_load.py --model $(MODEL) --data $(DATA_DIR) --seconds $(LOAD_SECONDS)

# Joey NMT, the book's code (d2l) and mtkit on one split, each for BUDGET seconds (600), one
# after the other: about 60 minutes. QUICK=1 gives each one minute (checks the script itself).
# The peers are installed once into PEERS_VENV, with mtkit's torch.
bench-peers: install
	$(BIN)/python benchmarks/peers/compare.py $(if $(DATA),--data $(DATA)) --work $(BENCH)/peers \
	  --venv $(PEERS_VENV) $(if $(filter 1 yes true,$(QUICK)),--quick) $(if $(BUDGET),--budget $(BUDGET))

# On a machine with an NVIDIA GPU and PyTorch (no network needed): tests/test_cuda.py, the three
# precisions, 2 minutes of the best recipe in bf16 and decoding speed; summary in $(GPU_OUT).
GPU_OUT ?= $(WORK)/gpu-check
gpu-check:
	OUT=$(GPU_OUT) bash benchmarks/gpu_check.sh $(or $(DATA),../shared/data/fra-eng.zip)

bench-scale: install  # corpora of 1M, 4M, 16M pairs, 3 training runs each (SIZES=20k,50k STEPS=20 TRAIN_RUNS=1: a quick check); about 20 GB of disk
	$(BIN)/python benchmarks/scale.py $(if $(DATA),--data $(DATA)) --work $(BENCH)/scale $(if $(SIZES),--sizes $(SIZES)) \
	  $(if $(STEPS),--steps $(STEPS)) $(if $(TRAIN_RUNS),--train-runs $(TRAIN_RUNS)) $(if $(PREPROCESS_ARGS),--preprocess-args="$(PREPROCESS_ARGS)")

# Domain adaptation: the best recipe for 10 minutes on pairs not mentioning Tom, then 2 minutes of
# fine-tuning on 3,000 Tom pairs; test BLEU on Tom and general sentences before and after
# (about 15 minutes; QUICK=1 checks the pipeline in about 2, its figures meaning nothing).
bench-domain: install
	$(BIN)/python benchmarks/domain_adapt.py $(if $(DATA),--data $(DATA)) --work $(BENCH)/domain $(if $(filter 1 yes true,$(QUICK)),--quick)

# Two runs of $(RECIPE) with seeds 1 and 2, ENSEMBLE_BUDGET each (about 25 minutes in all),
# scored alone and as an ensemble; QUICK=1 checks the script (1-minute runs on a slice).
ENSEMBLE_BUDGET ?= 10m
bench-ensemble: install
	$(BIN)/python benchmarks/ensemble.py $(if $(DATA),--data $(DATA)) --recipe $(RECIPE) --budget $(ENSEMBLE_BUDGET) \
	  --work $(BENCH)/ensemble$(if $(filter 1 yes true,$(QUICK)),-quick --quick)
