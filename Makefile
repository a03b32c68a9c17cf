# lir: make demo (install + the main job), make test (install + the suite), make bench, make lint.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data
MODEL  := model_repository/minilm
STAMP  := $(VENV)/.installed

.PHONY: install demo test verify-late verify-rerank bench lint clean

install: $(STAMP)

# torch first, from the CPU wheel on this disk: a resolver left alone may pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[export,dev]"
	# the tritonserver binary (Triton 2.51, python backend) only: its Python deps are not needed
	$(BIN)/python -m pip install -q --no-deps nvidia-pytriton==0.7.0
	touch $(STAMP)

$(MODEL)/manifest.json: $(STAMP)
	$(BIN)/lir-export --model sentence-transformers/all-MiniLM-L6-v2 --name minilm --int8 --overwrite

# The main job: all-MiniLM-L6-v2 exported, SciFact indexed and searched, nDCG@10 and throughput printed.
demo: $(MODEL)/manifest.json
	$(BIN)/lir index --engine onnx:$(MODEL) --corpus $(DATA)/scifact --output indexes/scifact-minilm --overwrite
	$(BIN)/lir search --index indexes/scifact-minilm --queries $(DATA)/scifact --split test \
		--output runs/scifact-minilm.trec
	$(BIN)/lir evaluate --run runs/scifact-minilm.trec --qrels $(DATA)/scifact --split test

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The late-interaction and sparse exactness tests over the whole of SciFact test (slow: about an hour on 2 cores)
verify-late: $(STAMP)
	LIR_FULL_SCIFACT=1 $(BIN)/python -m pytest -q tests/test_late_effectiveness.py

# DL19 re-ranking with all-MiniLM-L6-v2 against a live PyTorch reference over all 43 queries (a few minutes)
verify-rerank: $(STAMP)
	LIR_FULL_DL19=1 $(BIN)/python -m pytest -q tests/test_rerank_effectiveness.py

bench: $(MODEL)/manifest.json
	$(BIN)/python benchmarks/bench_encoders.py --model $(MODEL) --data $(DATA)/scifact
	$(BIN)/python benchmarks/bench_serving.py --model $(MODEL) --data $(DATA)/scifact
	$(BIN)/python benchmarks/bench_indexes.py --scale scifact  # synthetic; --scale 1m: 1M docs, ~30 min, ~8 GB
	$(BIN)/python benchmarks/bench_rerank.py --bi-encoder $(MODEL) --data $(DATA)/trec-dl-2019  # ~15 min

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf indexes runs bench-results $(MODEL)
