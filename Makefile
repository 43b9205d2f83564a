# `make demo` and `make test` work on a fresh clone: each sets up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= .demo
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench clean latex

# Reinstall whenever pyproject.toml changes; the stamp records a completed install.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# pdflatex for the LaTeX compile test (Debian packages; skipped silently where apt is absent).
latex:
	@command -v pdflatex >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    texlive-latex-base texlive-latex-recommended >/dev/null) || \
	  echo "note: pdflatex not installed; the LaTeX compile test will be skipped"; }

demo: setup
	$(PY) -m rmaunet demo --data $(DEMO_DIR)/data --storage $(DEMO_DIR)/results --reports reports/demo

test: setup latex
	$(PY) -m pytest -ra $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -ra -m 'not slow' $(PYTEST_ARGS)

bench: setup
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
