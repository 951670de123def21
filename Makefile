# Two entry points for a fresh machine: `make serve` and `make test`.
# Both create .venv and install mlxrpc into it with the MLX backend for this
# platform (Metal on macOS, CPU on Linux; MLX_EXTRA=cuda for NVIDIA GPUs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MLX_EXTRA ?= $(shell $(PYTHON) -c "import sys; print('' if sys.platform == 'darwin' else 'cpu')")
EXTRAS := $(subst $(eval) ,$(shell printf ','),$(strip $(MLX_EXTRA) test))
ARGS ?=

.PHONY: install serve test proto docs lint bench clean

$(VENV)/.installed-$(MLX_EXTRA): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(MLX_EXTRA)

serve: install
	$(VENV)/bin/mlxrpc serve $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

proto: install
	$(PY) -m mlxrpc.protogen

docs: install
	$(PY) -m mlxrpc.docgen

lint: install
	$(VENV)/bin/ruff check mlxrpc tests clients benchmarks

bench: install
	$(PY) -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
