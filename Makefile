# lir: make demo (install + the main job), make test (install + the suite), make bench, make lint,
# make finetune (the README's SciFact fine-tuning figures).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data
MODEL  := model_repository/minilm
STAMP  := $(VENV)/.installed

.PHONY: install demo test verify-late verify-rerank verify-reference verify-combos bench finetune lint clean gpu-install gpu-check

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

runs/scifact-minilm.trec:
	$(MAKE) demo

# SciFact fine-tuning from all-MiniLM-L6-v2, the README's figures (about 2 h on 2 cores): each config of
# FINETUNED is fitted (lir fit), exported with parity (lir-export), and both the export (clients) and the
# PyTorch model (lir index|search|re-rank --config) are evaluated on SciFact test: the bi-encoders index and
# search the corpus, the cross-encoder re-ranks the demo's dense top 100. Steps already done are kept.
SCIFACT      := $(DATA)/scifact
FINETUNED    := single-vector multi-vector cross-encoder
BI_FINETUNED := single-vector multi-vector
FIT          = runs/fit/$*/huggingface_checkpoint
IN_DATA      := --data.init_args.inference_datasets.init_args
.PRECIOUS: runs/fit/%/huggingface_checkpoint/config.json model_repository/scifact-%/manifest.json

finetune: $(FINETUNED:%=runs/scifact-%.trec) $(FINETUNED:%=runs/scifact-%-torch.trec)
	@echo "SciFact test (all-MiniLM-L6-v2 untrained: nDCG@10 0.6451)"
	@for run in $^; do printf '%-40s' $$run; \
		$(BIN)/lir evaluate --run $$run --qrels $(SCIFACT) --split test --metrics nDCG@10 | tail -1; done

runs/fit/%/huggingface_checkpoint/config.json: train/configs/%.yaml | $(STAMP)
	$(BIN)/lir fit --config $<

model_repository/scifact-%/manifest.json: runs/fit/%/huggingface_checkpoint/config.json
	$(BIN)/lir-export --model $(FIT) --name scifact-$* --overwrite

$(BI_FINETUNED:%=runs/scifact-%.trec): runs/scifact-%.trec: model_repository/scifact-%/manifest.json
	$(BIN)/lir index --engine onnx:$(<D) --corpus $(SCIFACT) --output indexes/scifact-$* --overwrite
	$(BIN)/lir search --index indexes/scifact-$* --queries $(SCIFACT) --split test --output $@

$(BI_FINETUNED:%=runs/scifact-%-torch.trec): runs/scifact-%-torch.trec: runs/fit/%/huggingface_checkpoint/config.json
	$(BIN)/lir index --config train/configs/index.yaml --model.init_args.model_name_or_path=$(FIT) \
		--trainer.callbacks.init_args.index_dir=indexes/scifact-$*-torch $(IN_DATA).docs=$(SCIFACT)
	$(BIN)/lir search --config train/configs/search.yaml --model.init_args.model_name_or_path=$(FIT) \
		--trainer.callbacks.init_args.index_dir=indexes/scifact-$*-torch --trainer.callbacks.init_args.run_name=scifact-$*-torch \
		$(IN_DATA).queries=$(SCIFACT) $(IN_DATA).qrels=$(SCIFACT)

runs/scifact-cross-encoder.trec: model_repository/scifact-cross-encoder/manifest.json runs/scifact-minilm.trec
	$(BIN)/lir rerank --engine onnx:$(<D) --run runs/scifact-minilm.trec --queries $(SCIFACT) --split test \
		--docs $(SCIFACT) --depth 100 --output $@

runs/scifact-cross-encoder-torch.trec: runs/fit/cross-encoder/huggingface_checkpoint/config.json runs/scifact-minilm.trec
	$(BIN)/lir re-rank --config train/configs/re-rank.yaml --model lir.train.fit_module.CrossEncoderFitModule \
		--model.init_args.model_name_or_path=$(<D) --trainer.callbacks.init_args.run_name=scifact-cross-encoder-torch \
		$(IN_DATA).queries=$(SCIFACT) $(IN_DATA).docs=$(SCIFACT) $(IN_DATA).qrels=$(SCIFACT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The late-interaction and sparse exactness tests over the whole of SciFact test (slow: about an hour on 2 cores)
verify-late: $(STAMP)
	LIR_FULL_SCIFACT=1 $(BIN)/python -m pytest -q tests/test_late_effectiveness.py

# DL19 re-ranking with all-MiniLM-L6-v2 against a live PyTorch reference over all 43 queries (a few minutes)
verify-rerank: $(STAMP)
	LIR_FULL_DL19=1 $(BIN)/python -m pytest -q tests/test_rerank_effectiveness.py

# Every Lightning IR 0.0.6 reference case also through its export (make test exports one per graph shape)
verify-reference: $(STAMP)
	LIR_FULL_REFERENCE=1 $(BIN)/python -m pytest -q tests/*/test_reference*.py

# Random Lightning IR 0.0.6 option combinations of every model type on three backbones (about 15 minutes)
verify-combos: $(STAMP)
	for backbone in bert electra modernbert; do $(BIN)/python -m tests.reference_combos --backbone $$backbone || exit 1; done

bench: $(MODEL)/manifest.json
	$(BIN)/python benchmarks/bench_encoders.py --model $(MODEL) --data $(DATA)/scifact
	$(BIN)/python benchmarks/bench_serving.py --model $(MODEL) --data $(DATA)/scifact
	$(MAKE) runs/scifact-minilm.trec  # the demo's index, searched on the server
	$(BIN)/python benchmarks/bench_serving_search.py --model $(MODEL) --index indexes/scifact-minilm --data $(DATA)/scifact
	$(BIN)/python benchmarks/bench_indexes.py --scale scifact  # synthetic; --scale 1m: 1M docs, ~30 min, ~8 GB
	$(BIN)/python benchmarks/bench_rerank.py --bi-encoder $(MODEL) --data $(DATA)/trec-dl-2019  # ~15 min
	$(BIN)/python benchmarks/bench_inference_free.py --data $(DATA)/scifact  # two MiniLM SPLADE exports, ~10 min

# GPU machines only (an NVIDIA driver for CUDA 13). onnxruntime and onnxruntime-gpu, like faiss-cpu and
# faiss-gpu-cu12, install the same module, so a venv holds one of each pair: this swaps the CPU builds for the
# pins of pyproject.toml's gpu extra, and torch's CPU wheel for PyPI's CUDA 13 build (`===`: exactly 2.13.0, not
# a local 2.13.0+cpu). A later `make install` (after pyproject.toml changes) brings the CPU builds back.
gpu-install: $(STAMP)
	$(BIN)/python -m pip uninstall -y -q onnxruntime faiss-cpu torch
	$(BIN)/python -m pip install -q "torch===2.13.0" "onnxruntime-gpu[cuda,cudnn]==1.31.*" "faiss-gpu-cu12==1.12.*"

# After gpu-install: CUDA/TensorRT/fp16 parity and docs/s against CPU fp32, Faiss GPU against CPU, a few bf16
# `lir fit` steps (under 8 min on one H200); a Markdown table and bench-results/gpu-check.json. Without a CUDA
# GPU it says so in one line. Not a prerequisite of install: that would put the CPU builds back.
gpu-check: | $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --model $(MODEL) --data $(DATA)/scifact

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf indexes runs bench-results $(MODEL)
