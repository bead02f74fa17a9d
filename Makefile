# `make demo` and `make test` work on a fresh machine: each creates .venv when missing and
# installs what it needs; running them again reinstalls nothing unless pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.covidcxr-installed
# The one torch/torchvision pair known to import together here (see README, "Installing").
TORCH := torch==2.14.1 torchvision==0.29.1
DEMO := runs/demo

.PHONY: install browser orthanc demo test lint format bench clean zoo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dicom,node,ray,dev]'
	touch $@

install: $(STAMP)

# The paper's three experiments on synthetic phantoms, sized for about 7 minutes on 2 CPU cores
# (10 with the install; README, "The demo"): its CNN, the CNN with augmentation, and transfer
# learning (an ImageNet backbone that installs offline stands in for VGG16, whose frozen features
# run at ~3 images/s on such CPUs); then a lung U-Net and the CNN trained on the lungs alone.
# Each run prints a line per epoch. It ends with the shipped pretrained models on real X-rays
# (REAL_SAMPLE, when that folder exists).
REAL_SAMPLE ?= ../shared/data/real-sample
DEMO_TRAIN := --split $(DEMO)/splits.csv --patience 8 --quiet
demo: install
	$(BIN)/covidcxr data phantoms $(DEMO)/data --per-class 200 --seed 0 --overwrite --quiet
	$(BIN)/covidcxr data inspect $(DEMO)/data --out $(DEMO)/inspect --quiet
	$(BIN)/covidcxr data split $(DEMO)/data --out $(DEMO)/splits.csv --quiet
	rm -rf $(DEMO)/seed-cnn $(DEMO)/seed-cnn-augment $(DEMO)/efficientnet-lite0 \
		$(DEMO)/unet-lite $(DEMO)/seed-cnn-lungs $(DEMO)/overlays $(DEMO)/real-sample
	$(BIN)/covidcxr train --data $(DEMO)/data --model seed-cnn --out $(DEMO)/seed-cnn \
		--epochs 60 --batch-size 32 $(DEMO_TRAIN)
	$(BIN)/covidcxr train --data $(DEMO)/data --model seed-cnn --augment \
		--out $(DEMO)/seed-cnn-augment --epochs 80 --batch-size 64 $(DEMO_TRAIN)
	$(BIN)/covidcxr train --data $(DEMO)/data --model efficientnet-lite0 \
		--out $(DEMO)/efficientnet-lite0 --epochs 60 --batch-size 32 $(DEMO_TRAIN)
	$(BIN)/covidcxr segment train --data $(DEMO)/data --model unet-lite --out $(DEMO)/unet-lite \
		--epochs 3 --batch-size 16 --split $(DEMO)/splits.csv --quiet
	$(BIN)/covidcxr segment predict $(DEMO)/unet-lite $(DEMO)/data/Normal/images/Normal-1.png \
		$(DEMO)/data/COVID/images/COVID-1.png "$(DEMO)/data/Viral Pneumonia/images/Viral Pneumonia-1.png" \
		--out $(DEMO)/overlays --quiet
	$(BIN)/covidcxr train --data $(DEMO)/data --model seed-cnn --lungs mask \
		--seg-model $(DEMO)/unet-lite --out $(DEMO)/seed-cnn-lungs --epochs 60 --batch-size 32 \
		$(DEMO_TRAIN)
	$(BIN)/covidcxr compare $(DEMO)/seed-cnn $(DEMO)/seed-cnn-augment \
		$(DEMO)/efficientnet-lite0 $(DEMO)/seed-cnn-lungs --out $(DEMO)
	$(BIN)/covidcxr report $(DEMO)/seed-cnn --data $(DEMO)/data --out $(DEMO)/report.html --quiet
	$(BIN)/covidcxr export $(DEMO)/seed-cnn --check $(DEMO)/data/COVID/images
	@echo
	@echo "Everything above was trained on synthetic phantoms: it shows the pipeline, and those"
	@echo "models know nothing about real X-rays. The pretrained models that ship with covidcxr"
	@echo "were trained on real films:"
	@if [ -d "$(REAL_SAMPLE)" ]; then \
		echo "on the real X-rays in $(REAL_SAMPLE) (kept out of their training):"; \
		$(BIN)/covidcxr evaluate efficientnet-lite0-db --data "$(REAL_SAMPLE)" \
			--out $(DEMO)/real-sample --quiet; \
	else \
		echo "(no real X-rays at $(REAL_SAMPLE); run make demo REAL_SAMPLE=YOUR_DATASET to see"; \
		echo " them on yours.) On a phantom:"; \
		$(BIN)/covidcxr predict efficientnet-lite0-db $(DEMO)/data/COVID/images/COVID-1.png; \
	fi
	@echo
	@echo "Demo finished. Open $(DEMO)/report.html first: data, curves, results with confidence"
	@echo "intervals, calibration, Grad-CAM, sources, shortcut probes, leakage. Then, in $(DEMO)/:"
	@echo "  inspect/         class counts, sample grids, intensity histograms (the paper's EDA)"
	@echo "  comparison.csv   the table above; confusion_matrices.png side by side"
	@echo "  seed-cnn/, seed-cnn-augment/, efficientnet-lite0/, seed-cnn-lungs/ (lungs only):"
	@echo "                   curves.png, confusion_matrix.png, metrics.json, saved model in model/"
	@echo "  unet-lite/       lung segmentation: metrics.json (Dice, IoU, HD95), worst_cases.png"
	@echo "  overlays/        predicted lung masks and outlines on three X-rays"
	@echo "  seed-cnn/model/model.onnx  the CNN for ONNX Runtime (checked against PyTorch above)"
	@echo "For real films: .venv/bin/covidcxr predict efficientnet-lite0-db YOUR_XRAY.png (or .dcm,"
	@echo "or a folder); .venv/bin/covidcxr serve, then open http://127.0.0.1:8000/"

# The shipped pretrained models, trained on real films on this CPU (recipes/zoo.py): the three
# public snapshots (see recipes/real_data.py) in, runs and a results table in ZOO_WORK, the
# models copied into src/covidcxr/zoo. Resumable: rerun after a kill.
ZOO_WORK ?= $(HOME)/covidcxr-zoo
zoo: install
	@test -n "$(LUNDIS)" -a -n "$(PAEDIATRIC)" -a -n "$(VP_MASKS)" || { echo \
		"usage: make zoo LUNDIS=<GitKentC/lundis snapshot> PAEDIATRIC=<rtchanon/... snapshot>" \
		"VP_MASKS=<ayazmhmd/Unet-Projects snapshot> [ZOO_WORK=$(ZOO_WORK)]"; exit 2; }
	$(BIN)/python recipes/zoo.py --lundis "$(LUNDIS)" --paediatric "$(PAEDIATRIC)" \
		--vp-masks "$(VP_MASKS)" --work "$(ZOO_WORK)" --sample "$(REAL_SAMPLE)" --ship --quiet

# The browser test drives Debian's Chromium (no browser download). Under CI (CI=true) it is
# installed here and the test must run; elsewhere the test is skipped, saying how to enable it.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@if [ "$$CI" = "true" ] && [ ! -x /usr/bin/chromium ]; then \
		echo "CI=true: installing Debian's chromium for the browser test"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			chromium >/dev/null \
		|| { $(SUDO) apt-get update -q >/dev/null && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends chromium >/dev/null; }; \
	fi

# The DICOM node's tests run against Debian's Orthanc; under CI (CI=true) it is installed here
# and the tests must run; elsewhere they are skipped, saying how to enable them.
orthanc:
	@if [ "$$CI" = "true" ] && [ ! -x /usr/sbin/Orthanc ]; then \
		echo "CI=true: installing Debian's orthanc for the DICOM node tests"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			orthanc orthanc-dicomweb openssl >/dev/null \
		|| { $(SUDO) apt-get update -q >/dev/null && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends orthanc orthanc-dicomweb openssl \
			>/dev/null; }; \
	fi

test: install browser orthanc
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python benchmarks/bench_cache.py
	$(BIN)/python benchmarks/bench_duplicates.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache test-artifacts
