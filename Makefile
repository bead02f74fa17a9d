# `make demo` and `make test` work on a fresh machine: each creates .venv when missing and
# installs what it needs; running them again reinstalls nothing unless pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.covidcxr-installed
# The one torch/torchvision pair known to import together here (see README, "Installing").
TORCH := torch==2.14.1 torchvision==0.29.1
DEMO := runs/demo

.PHONY: install demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dicom,dev]'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/covidcxr data phantoms $(DEMO)/data --per-class 100 --seed 0 --overwrite
	$(BIN)/covidcxr data inspect $(DEMO)/data --out $(DEMO)/inspect
	$(BIN)/covidcxr data split $(DEMO)/data --out $(DEMO)/splits.csv
	@echo
	@echo "Demo finished. Open:"
	@echo "  $(DEMO)/inspect/class_counts.png, samples_*.png, intensity_histograms.png"
	@echo "  $(DEMO)/splits.csv   (train/val/test, near-duplicates kept together)"
	@echo "  $(DEMO)/data         (the synthetic dataset, in the database's layout)"

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python benchmarks/bench_cache.py
	$(BIN)/python benchmarks/bench_duplicates.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
