# The two commands a new machine needs: `make demo` and `make test`. Each creates the venv
# and installs what it needs first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration bench soak eval eval-tuning eval-artwork lint fmt clean

$(STAMP): pyproject.toml setup.py online_models/_page_core.pyx topics/_avro_page.pyx topics/_avro_read.pyx
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m homestream.stack.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

test-integration: $(STAMP)
	$(BIN)/python -m pytest -m integration

bench: $(STAMP)
	$(BIN)/python -m bench.run --workers 2,1 --learner-mode topic --render-window-ms 1000 \
		--load-share 0.5 --min-events-per-s 20000 --max-freshness-p99-ms 250 \
		--min-serve-ratio 0.5 --max-serve-p99-ratio 2.0

# the local stack under half the measured worker throughput and serving load for
# SOAK_SECONDS (600): memory at the end of warm-up and at the end, errors (not in make test)
soak: $(STAMP)
	$(BIN)/python -m bench.soak

DAY_VARIANTS = defaults,no session starts,impression discount 0.95,no required rows,\
impression discount 0.8,no member affinities

eval-artwork: $(STAMP)
	$(BIN)/python -m evaluation artwork

eval: $(STAMP)
	$(BIN)/python -m evaluation movielens --out docs/evaluation.md

# the page parameters tried on the first half of MovieLens (docs/evaluation-tuning.md; with
# day chunks, docs/evaluation-tuning-day.md)
eval-tuning: $(STAMP)
	$(BIN)/python -m evaluation.movielens.tune --out docs/evaluation-tuning.md
	$(BIN)/python -m evaluation.movielens.tune --chunk day --out docs/evaluation-tuning-day.md \
		--only "$(DAY_VARIANTS)"

lint: $(STAMP)
	$(BIN)/ruff check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .homestream-data
