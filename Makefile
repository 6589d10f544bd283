# Two entry points: `make demo` (AN4: HMM-GMM and neural systems, ends with one comparison
# table) and `make test` (import smoke test, then pytest). Both create .venv and install asrkit
# into it from the lock file (requirements/lock.txt) when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
LOCK := requirements/lock.txt
AN4_DIR ?= $(abspath ../shared/corpora/an4)
DEMO_DIR ?= demo
export AN4_DIR

.PHONY: demo test install lint lock clean-venv

# The lock pins every package, torch and torchaudio binaries included: the same commands give
# the same environment next month. The extras' packages are pinned by the lock as well.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip uninstall -q -y asrkit 2>/dev/null || true  # before 2026-12 the dist was "asrkit"
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	$(PY) scripts/check_install.py
	touch $@

install: $(VENV)/.installed

demo: install
	PATH="$(BIN):$$PATH" recipes/an4/demo.sh --an4-dir "$(AN4_DIR)" --work-dir "$(DEMO_DIR)"

test: install
	$(PY) scripts/check_install.py
	PATH="$(BIN):$$PATH" $(PY) -m pytest -q -ra --durations=15

lint: install
	$(BIN)/ruff check asrkit tests scripts

# Re-resolve every dependency to the newest release the pins in pyproject.toml allow, in a
# scratch venv, check it, and rewrite the lock only if the smoke test passes. Then run
# `make clean-venv test` and commit the lock if the suite passes.
lock:
	rm -rf .venv-lock
	python3 -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q -e '.[dev]'
	.venv-lock/bin/python scripts/check_install.py --optional
	{ echo "# Exact versions of every package asrkit installs, tested together."; \
	  echo "# Used as pip constraints by 'make install': pip install -c $(LOCK) -e '.[dev]'."; \
	  echo "# Regenerate with 'make lock' (README: Installation); generated on $$(date +%F)" \
	       "for $$(.venv-lock/bin/python -c 'import platform; print("CPython", platform.python_version(), platform.system(), platform.machine())')."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^-e '; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .venv-lock

clean-venv:
	rm -rf $(VENV)
