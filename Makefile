# nst-fast developer and user commands. `make help` lists them.
PYTHON ?= python3
VGG_WEIGHTS ?= imagenet
DEMO_DIR ?= outputs/demo
OUT ?= outputs/gpu-check

.PHONY: help install demo test test-fast lint tensorboard bench bench-quick gpu-check \
	gpu-check-rehearse gpu-bundle web-screenshots clean

help:
	@echo "make install       install nst-fast and its dev tools (pip install -e '.[dev]')"
	@echo "make demo          train the demo style network (VGG_WEIGHTS=path for offline weights)"
	@echo "make test          run the whole test suite (offline, CPU), as CI does, a worker per core"
	@echo "make test-fast     the tests not marked slow: about a minute, for everyday work"
	@echo "make lint          ruff"
	@echo "make tensorboard   tensorboard --logdir outputs"
	@echo "make bench         training/stylize/data/memory figures beside the reference"
	@echo "make bench-quick   a short smoke run of the benchmark"
	@echo "make gpu-check     on a CUDA machine: the GPU check's report in OUT (docs/development.md)"
	@echo "make gpu-check-rehearse  the same check on the CPU at tiny sizes (about a minute)"
	@echo "make gpu-bundle    .gpu-bundle/: what a lent GPU machine needs, within its carry limit"
	@echo "make web-screenshots  docs/web/*.png: the web page with the demo model (Chromium)"

install:
	$(PYTHON) -m pip install -e ".[dev]"

demo:
	$(PYTHON) -m nst_fast train experiment=demo loss.weights=$(VGG_WEIGHTS) hydra.run.dir=$(DEMO_DIR)

test:
	$(PYTHON) -m pytest -q -n auto --dist loadfile

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

tensorboard:
	tensorboard --logdir outputs

bench:
	$(PYTHON) scripts/bench/benchmark.py

bench-quick:
	$(PYTHON) scripts/bench/benchmark.py --quick

gpu-check:
	$(PYTHON) scripts/gpu/gpu_check.py --out $(OUT)

gpu-check-rehearse:
	$(PYTHON) scripts/gpu/gpu_check.py --rehearse --out $(OUT)

gpu-bundle:
	$(PYTHON) scripts/gpu/gpu_bundle.py

web-screenshots:
	$(PYTHON) scripts/pages/web_screenshots.py $(DEMO_DIR)/model.pt

clean:
	rm -rf outputs multirun .pytest_cache
