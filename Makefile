# Two entry points: `make demo` (AN4 recipe, quick config, prints the WER table) and
# `make test` (pytest). Both create .venv and install asrkit into it when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
AN4_DIR ?= $(abspath ../shared/corpora/an4)
export AN4_DIR

.PHONY: demo test install lint

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	PATH="$(BIN):$$PATH" recipes/an4/run.sh --an4-dir "$(AN4_DIR)" \
	  --conf recipes/an4/conf/train_quick.yaml

test: install
	PATH="$(BIN):$$PATH" $(PY) -m pytest -q -ra

lint: install
	$(BIN)/ruff check asrkit tests scripts
