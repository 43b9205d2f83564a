# `make demo` and `make test` work on a fresh clone: each sets up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= .demo
PYTEST_ARGS ?=
# The whole suite's line coverage of rmaunet/ may not fall below this (slow tests included;
# measured 91.6 % on a fresh clone).
COV_FLOOR ?= 85
FUZZ_N ?= 2000
# The suite runs on this many processes, each taking whole test files (module-scoped Ray
# runtimes stay in one process), the longest files first (tests/conftest.py). On 2 cores
# the suite is CPU-bound with three: a fresh clone's run kept both cores 99 % busy (58
# CPU-minutes in 29 minutes). Four are not faster: vmstat showed 0.4 % idle and a run queue
# of 17 for 29 minutes, by which time only the slow files' 68 tests had passed. More
# processes only help on a machine with more cores.
# TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 3
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

.PHONY: setup demo test test-fast lint fuzz bench clean latex postgres

# Reinstall whenever pyproject.toml changes; the stamp records a completed install. uv
# installs the same versions pip resolves (compared with `pip freeze`) in about 25 s on a
# cold cache, where pip took about 150 s: a fresh clone's `make test` is that much shorter.
# Where uv cannot run, pip does the install.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip install --python $(PY) --quiet -e '.[test]' || $(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# pdflatex and pdftoppm for the LaTeX compile-and-render test (Debian packages; the test
# skips with its reason where apt is absent).
latex:
	@{ command -v pdflatex && command -v pdftoppm; } >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    texlive-latex-base texlive-latex-recommended poppler-utils >/dev/null) || \
	  echo "note: pdflatex not installed; the LaTeX compile test will be skipped"; }

# PostgreSQL's server binaries for the tests that keep a search's Optuna study in a throwaway
# server (tests/pg_server.py); Debian puts them in /usr/lib/postgresql/<version>/bin, off PATH.
# Those tests skip with their reason where apt is absent.
postgres:
	@{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    postgresql >/dev/null) || \
	  echo "note: PostgreSQL not installed; the PostgreSQL tests will be skipped"; }

demo: setup
	$(PY) -m rmaunet demo --data $(DEMO_DIR)/data --storage $(DEMO_DIR)/results --reports reports

test: setup latex postgres lint
	$(PY) -m pytest -ra $(XDIST) --cov=rmaunet --cov-report=term:skip-covered --cov-fail-under=$(COV_FLOOR) $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -ra $(XDIST) -m 'not slow' $(PYTEST_ARGS)

# ruff: lint and format (configured in pyproject.toml).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The seeded fuzz suite at FUZZ_N mutated specs and data files (the suite runs a few hundred).
fuzz: setup
	RMAUNET_FUZZ_N=$(FUZZ_N) $(PY) -m pytest -ra tests/test_fuzz.py

# Each benchmark's figures, with the machine and load they were measured on, go to
# bench/results/NAME.json (bench/record.py); the README's table is rendered from those files.
bench: setup
	for b in $(filter-out bench/record.py bench/table.py,$(wildcard bench/*.py)); do $(PY) bench/record.py $$(basename $$b .py) || exit 1; done
	$(PY) bench/table.py --write

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .coverage build *.egg-info
