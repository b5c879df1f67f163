# Everything runs from a local virtualenv (.venv) that `make setup` creates.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo study test test-fast clean

$(BIN)/lrc: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first (pip resolves 2.14.1 / 0.29.1 from this machine's wheel cache), then SAM2, whose
	# sdist builds against the installed torch (no CUDA extension needed on CPU), then lrc itself.
	$(BIN)/pip install "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --no-build-isolation "sam2>=1.0"
	$(BIN)/pip install -e ".[dev]"
	touch $(BIN)/lrc

setup: $(BIN)/lrc

demo: setup
	$(BIN)/lrc fit experiments/demo/tiny.yaml

# The default study: four HiCo compressors at 16 tokens per frame -> results table and plots (docs/ablations.md)
study: setup
	$(BIN)/lrc ablate experiments/ablations/compressors.yaml --out runs/study-compressors

# lint-imports: the layer contracts of pyproject.toml (docs/design.md); a backwards import fails here
test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
