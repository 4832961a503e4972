# Every command a newcomer needs. The README shows the two that matter: `make dev`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: dev test tools lint format bench-dashboard bench-recharge bench-refill bench-cli-recharge bench-inference bench-api bench-soak clean-data

# (Re)install when pyproject.toml changes; creates the virtualenv when missing.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[embedded,dev]'
	@touch $(STAMP)

## Run SwapMeter on this machine: embedded PostgreSQL + Redis under .swapmeter/ unless
## SWAPMETER_DATABASE_URL / SWAPMETER_REDIS_URL are set.
dev: $(STAMP)
	$(BIN)/swapmeter dev $(DEV_ARGS)

## Run the whole test suite against real PostgreSQL and Redis (started embedded if needed).
test: $(STAMP) tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Install the tools the tests run that no wheel of the dev extra brings (Debian packages,
## tools with clashing pins); quick when they are there.
tools:
	scripts/test-tools.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Server time of every dashboard page on a tenant of 100,000 users and 1,000,000 ledger
## entries (BENCH_ARGS="--users 10000 --entries 100000" for a quicker run).
bench-dashboard: $(STAMP)
	$(BIN)/python bench/dashboard.py $(BENCH_ARGS)

bench-recharge: $(STAMP)
	$(BIN)/python bench/bulk_recharge.py

## The daily refill of a plan of 10,000 users (median of 5 simulated days; target <= 2 s).
bench-refill: $(STAMP)
	$(BIN)/python bench/plan_refill.py $(BENCH_ARGS)

## `swapmeter admin recharge` of 1,000,000 rows, then killed at half and resumed
## (BENCH_ARGS="--rows 100000" for a quicker run).
bench-cli-recharge: $(STAMP)
	$(BIN)/python bench/cli_recharge.py $(BENCH_ARGS)

bench-inference: $(STAMP)
	$(BIN)/python bench/inference.py

bench-api: $(STAMP)
	$(BIN)/python bench/api.py

## 20 minutes of mixed swaps, cancels and recharges: do RSS, open files, temporary files
## and open holds stay flat? (BENCH_ARGS="--minutes 3" for a quicker run).
bench-soak: $(STAMP)
	$(BIN)/python bench/soak.py $(BENCH_ARGS)

## Delete the embedded servers' data (stops nothing: stop `make dev` first).
clean-data:
	rm -rf .swapmeter .swapmeter-test
