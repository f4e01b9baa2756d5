# Hush: `make run` to use it, `make test` to check it. Both set up everything they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  ?= smollm2-135m
RUN_LOG := $(VENV)/hushd.log

.PHONY: run test test-models lint install install-test model clean help \
	install-service install-user-service uninstall-service

help:
	@echo "make run          set up, fetch $(MODEL), start hushd and open the hush UI"
	@echo "make test         install test tools and run the test suite"
	@echo "make test-models  end-to-end tests with the larger catalog models (slow)"
	@echo "make lint         ruff and mypy"
	@echo "make install-service       install as a hardened system service (as root)"
	@echo "make install-user-service  install as a systemd user service"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps make a second run take seconds: pip runs again only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

model: $(VENV)/.installed
	$(BIN)/hush model pull $(MODEL)

# Reuses a daemon that already answers; otherwise starts one and stops it when the UI exits.
run: model
	@if $(BIN)/hush status >/dev/null 2>&1; then \
		$(BIN)/hush; \
	else \
		$(BIN)/hushd --model $(MODEL) 2>>$(RUN_LOG) & pid=$$!; \
		trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT INT TERM; \
		$(BIN)/hush status --wait 60 >/dev/null || { echo "hushd did not start; see $(RUN_LOG)" >&2; exit 1; }; \
		$(BIN)/hush; \
	fi

# Run as a service: a dedicated virtualenv, then systemd units, user, sealed key and model.
PREFIX ?= /opt/hush
USER_PREFIX ?= $(or $(XDG_DATA_HOME),$(HOME)/.local/share)/hush

install-service:
	test -x $(PREFIX)/venv/bin/python || $(PYTHON) -m venv $(PREFIX)/venv
	$(PREFIX)/venv/bin/python -m pip install --quiet --upgrade pip .
	$(PREFIX)/venv/bin/hushd install --system --source $(CURDIR)

install-user-service:
	test -x $(USER_PREFIX)/venv/bin/python || $(PYTHON) -m venv $(USER_PREFIX)/venv
	$(USER_PREFIX)/venv/bin/python -m pip install --quiet --upgrade pip .
	$(USER_PREFIX)/venv/bin/hushd install --user --source $(CURDIR)

uninstall-service:
	$(PREFIX)/venv/bin/hushd uninstall --system

lint: $(VENV)/.installed-test
	$(BIN)/ruff check daemon tui tests
	@# mypy cannot follow setuptools' package-dir mapping; give it the import layout.
	@mkdir -p .mypy-src/hush && ln -sfn ../../daemon .mypy-src/hush/daemon && ln -sfn ../../tui .mypy-src/hush/tui
	MYPYPATH=.mypy-src $(BIN)/mypy -p hush.daemon -p hush.tui

test: $(VENV)/.installed-test
	$(BIN)/hush model pull $(MODEL)
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest

test-models: $(VENV)/.installed-test
	$(BIN)/pytest -m models

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
