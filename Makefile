# Set-up and the two jobs. Needs only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-gpu lint clean

# The project is installed as a package (a wheel, not an editable install): a regular package in
# site-packages, which wins over a folder named nasdsl in the working folder (the clone itself,
# seen from the folder that holds it, which Python would import as an empty namespace package;
# an editable install's import hook comes after that). Run from the repository's root, Python
# imports the working tree (nasdsl/__init__.py maps backends/); the installed copy is made again
# whenever a file of the package changes, so that the nasdsl program runs the tree as it is.
PACKAGE_FILES := $(wildcard nasdsl/*.py nasdsl/*/*.py backends/*.py backends/templates/*.jinja)

$(STAMP): pyproject.toml $(PACKAGE_FILES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q ".[test,search,bench,openvino]"
	touch $(STAMP)

## the main job on the reference spec
run: $(STAMP)
	$(VENV)/bin/nasdsl build specs/googlenet.yaml -o out

## the whole test suite (lint included), on every core
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -n auto

bench: $(STAMP)
	$(PY) benchmarks/pytorch_speed.py
	$(PY) benchmarks/onnx_export.py
	$(PY) benchmarks/ir_speed.py
	$(PY) benchmarks/onnx_cli.py
	$(PY) benchmarks/zoo_speed.py --check-seconds
	$(PY) benchmarks/optimize_speed.py
	$(PY) benchmarks/deploy_speed.py
	$(PY) benchmarks/latency_model.py
	$(PY) benchmarks/conv_transpose_latency.py

## the GPU benchmark of inference builds (needs CUDA; docs/optimize.md)
bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu_speed.py

clean:
	rm -rf $(VENV) out
