# Every target bootstraps .venv itself when it is missing or stale.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OPENCODE_VERSION := 1.18.33
OPENCODE_DIR     := .tools/opencode
OPENCODE_BIN     := $(OPENCODE_DIR)/node_modules/.bin/opencode

.PHONY: setup test sweep lab bench opencode clean notebooks-full

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,lab]'
	touch $(STAMP)

setup: $(STAMP) opencode

$(OPENCODE_BIN):
	mkdir -p $(OPENCODE_DIR)
	npm install --silent --no-audit --no-fund --prefix $(OPENCODE_DIR) opencode-ai@$(OPENCODE_VERSION)

opencode: $(OPENCODE_BIN)

test: $(STAMP) $(OPENCODE_BIN)
	$(BIN)/python -m pytest -q --nbmake --nbmake-timeout=300 tests notebooks

sweep: $(STAMP)
	$(BIN)/orchestra run experiments/concurrency_sweep.toml

bench: $(STAMP)
	$(BIN)/orchestra bench store
	$(BIN)/orchestra bench scheduler
	$(BIN)/orchestra bench http

lab: $(STAMP)
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --allow-root notebooks/

clean:
	rm -rf $(VENV) $(OPENCODE_DIR) .pytest_cache
