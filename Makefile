# titlecat — two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install, train + evaluate the default MLP on $(DATA)
#   make test   the test suite (.ci/run calls exactly this); installs Debian's chromium first when it
#               is missing (the serve page's browser test; apt-get, as root: CI runs as root)
#
# torch: the pinned CPU build is installed unless the venv already has a torch.
# A GPU user installs their own first, e.g.
#   python3 -m venv .venv && .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cu128
# or overrides the spec: make install TORCH_SPEC="torch==2.13.0"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DATA ?= ../shared/data/meli2019-es
OUT ?= runs/mlp
MLP ?= $(OUT)
ENSEMBLE ?= runs/ensemble
BIN := $(VENV)/bin

.PHONY: install demo test bench bench-serve experiments ui clean browser

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/titlecat train --model mlp --train $(DATA)/spanish.train.jsonl.gz \
	    --test $(DATA)/spanish.test.jsonl.gz --output $(OUT)

# the headless browser of tests/test_serve_page.py: Debian's chromium (playwright drives it; no
# browser download), installed once, skipped when a chromium is already on the PATH
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium fonts-dejavu-core; }

test: install browser
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_mlp.py --data $(DATA)

bench-serve: install browser  # needs two bundles: make bench-serve MLP=runs/mlp ENSEMBLE=runs/ensemble
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/bench_serve.py --data $(DATA) --mlp $(MLP) --ensemble $(ENSEMBLE) \
	    --screenshot docs/serve_page.png

experiments: install  # the tuning studies and runs behind docs/report.md (~2 h 40 min on 2 cores)
	DATA=$(DATA) TITLECAT=$(BIN)/titlecat bash benchmarks/experiments.sh

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) runs .pytest_cache
