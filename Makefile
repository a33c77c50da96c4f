# Every target bootstraps .venv itself when it is missing or stale.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OPENCODE_VERSION := 1.18.33
OPENCODE_DIR     := .tools/opencode
OPENCODE_BIN     := $(OPENCODE_DIR)/node_modules/.bin/opencode

.PHONY: setup lint test sweep lab bench opencode postgres chromium clean notebooks-full agents-sweep

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,lab]'
	touch $(STAMP)

setup: $(STAMP) opencode postgres chromium

# The PostgreSQL server binaries for the second store backend and its tests
# (orchestra_kit/store/pgserver.py starts throwaway clusters with them).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q postgresql; }

# Debian's Chromium for tests/browser (Playwright drives it; no browser is ever downloaded).
# Instant when present; without root it warns, and the browser tests skip (fail under CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "warning: could not install chromium: tests/browser will be skipped" >&2

$(OPENCODE_BIN):
	mkdir -p $(OPENCODE_DIR)
	npm install --silent --no-audit --no-fund --prefix $(OPENCODE_DIR) opencode-ai@$(OPENCODE_VERSION)

opencode: $(OPENCODE_BIN)

lint: $(STAMP)
	$(BIN)/ruff check orchestra_kit tests notebooks
	$(BIN)/mypy orchestra_kit
	$(BIN)/lint-imports

# The tests run on pytest-xdist workers: most wait on sockets, child processes and
# sleeps, so more workers than cores still pay. Folders whose tests share an expensive
# fixture run on one worker (ONE_WORKER in tests/conftest.py). The few tests marked
# `alone` (their checks read timings) run first, by themselves, while the machine is
# quiet; then everything else in parallel, whatever the first pass gave; `make test`
# fails if either pass failed. PYTEST_WORKERS=0: one process.
# One file by hand needs none of this: .venv/bin/python -m pytest tests/unit/test_x.py
PYTEST_WORKERS ?= 3
test: $(STAMP) $(OPENCODE_BIN) postgres chromium lint
	$(BIN)/python -m pytest -q --durations=30 -m alone --nbmake --nbmake-timeout=300 \
		tests notebooks; alone=$$?; \
	$(BIN)/python -m pytest -q --durations=30 -n $(PYTEST_WORKERS) --dist loadgroup \
		-m "not alone" --nbmake --nbmake-timeout=300 tests notebooks; rest=$$?; \
	if [ $$alone -ne 0 ]; then exit $$alone; fi; exit $$rest

sweep: $(STAMP)
	$(BIN)/orchestra run experiments/concurrency_sweep.toml

# Real agents: how many opencode agents this machine bears, and the LLM provider's limits.
agents-sweep: $(STAMP) $(OPENCODE_BIN)
	$(BIN)/orchestra run experiments/opencode_sweep.toml
	$(BIN)/orchestra run experiments/llm_sweep.toml

bench: $(STAMP)
	$(BIN)/orchestra bench store
	$(BIN)/orchestra bench scheduler
	$(BIN)/orchestra bench http

lab: $(STAMP)
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --allow-root --ServerApp.root_dir=. \
		--LabApp.default_url=/lab/tree/notebooks

clean:
	rm -rf $(VENV) $(OPENCODE_DIR) .pytest_cache


# --- lab notebooks at full size (papermill) and the regression baseline -------------
# Executed copies go to results/notebooks/ (git-ignored). Parameters (smoke defaults
# live in each notebook's `parameters` cell):
#   01 TEAM_SIZE=16 TASKS=200 · 02 USERS=[1..128] DURATION_S=4 REPEATS=3 ·
#   03 WORKLOAD=mix LEVELS="4, 16, 64" DURATION_S=3 · 04 SIZE=full · 05 as committed ·
#   06 USERS=[1,10,100] DURATION_S=4 ·
#   08 OPENCODE_USERS=[1,2,4,8,16] LLM_USERS=[1..64] LLM_DURATION_S=3.
NB_OUT := results/notebooks
PAPERMILL := $(BIN)/papermill --cwd notebooks --kernel python3 --log-output

notebooks-full: $(STAMP)
	mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/01-quickstart.ipynb $(NB_OUT)/01-quickstart.ipynb -p TEAM_SIZE 16 -p TASKS 200
	$(PAPERMILL) notebooks/02-concurrency-sweep.ipynb $(NB_OUT)/02-concurrency-sweep.ipynb \
		-y '{"USERS": [1, 2, 4, 8, 16, 32, 64, 128], "DURATION_S": 4.0, "REPEATS": 3}'
	$(PAPERMILL) notebooks/03-tuning-panel.ipynb $(NB_OUT)/03-tuning-panel.ipynb \
		-p WORKLOAD mix -p LEVELS "4, 16, 64" -p DURATION_S 3.0
	$(PAPERMILL) notebooks/04-seed-table.ipynb $(NB_OUT)/04-seed-table.ipynb -p SIZE full
	$(PAPERMILL) notebooks/05-regression.ipynb $(NB_OUT)/05-regression.ipynb
	$(PAPERMILL) notebooks/06-chat.ipynb $(NB_OUT)/06-chat.ipynb \
		-y '{"USERS": [1, 10, 100], "DURATION_S": 4.0}'
	$(PAPERMILL) notebooks/07-scale-out.ipynb $(NB_OUT)/07-scale-out.ipynb \
		-y '{"INSTANCES": [1, 2, 3, 4], "DURATION_S": 3.0, "CONCURRENCY": 64}'
	$(PAPERMILL) notebooks/08-real-agents.ipynb $(NB_OUT)/08-real-agents.ipynb \
		-y '{"OPENCODE_USERS": [1, 2, 4, 8, 16], "LLM_USERS": [1, 2, 4, 8, 16, 32, 64], "LLM_DURATION_S": 3.0}'

# Refresh the committed regression baseline deliberately (see notebooks/05-regression.ipynb).
.PHONY: baseline
baseline: $(STAMP)
	rm -rf results/.baseline-run results/baselines/regression
	$(BIN)/orchestra run experiments/regression.toml --results results/.baseline-run --no-charts --no-progress
	mkdir -p results/baselines
	cp -r results/.baseline-run/regression/*/ results/baselines/regression
	rm -rf results/baselines/regression/requests.csv results/baselines/regression/report.html results/baselines/regression/service
	rm -rf results/.baseline-run
