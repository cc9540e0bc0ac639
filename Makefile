# digihuman — two commands: `make demo` and `make test`. Each does all set-up itself.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint serve install clean bench

$(STAMP): pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/digihuman demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

serve: $(STAMP)
	$(BIN)/digihuman serve --web  # the API on 8181, workers, the demo page on 7860

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) data-root .pytest_cache .mypy_cache .ruff_cache
