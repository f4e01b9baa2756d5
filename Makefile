# Hush: `make run` to use it, `make test` to check it. Both set up everything they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Unset: `make run` pulls the best catalog model that fits this machine's memory and makes it
# the default (`hush model list` shows the choice). Tests always use the small, fast one.
MODEL  ?=
TEST_MODEL := smollm2-135m
RUN_LOG := $(VENV)/hushd.log

.PHONY: run test test-models lint install install-test model clean help bench redteam \
	install-service install-user-service uninstall-service

help:
	@echo "make run          set up, fetch the model that fits this machine (or MODEL=NAME),"
	@echo "                  start hushd and open the hush UI"
	@echo "make test         install test tools and run the test suite"
	@echo "make test-models  end-to-end tests with the larger catalog models (slow)"
	@echo "make test-arm64   arm64 end-to-end checks under qemu-user (docs/edge.md)"
	@echo "make lint         ruff and mypy"
	@echo "make bench        benchmarks against llama.cpp; writes docs/benchmarks.md (~30 min)"
	@echo "make redteam      hostile frames, documents, policies and loads against hushd (~20 min)"
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

# llama.cpp for `make bench`, built from source. A native build (-march=native) died with
# "Illegal instruction" on the development VMs, so pin a portable AVX2 build instead.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF

# --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and could hand back a native build.
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet --no-cache-dir \
		-e '.[test,bench]'
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
		$(BIN)/hushd $(if $(MODEL),--model $(MODEL)) 2>>$(RUN_LOG) & pid=$$!; \
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
	@# mypy reads directories, not import hooks: it names modules after the directories they
	@# sit in (mypy_path and explicit_package_bases included), and it cannot run the hook the
	@# editable install serves hush.daemon (daemon/) and hush.tui (tui/) through. Setuptools'
	@# compat editable mode cannot express the mapping (no module named 'hush'); its strict
	@# mode links each file at install time, so a module added later is missing until a
	@# reinstall. Linked directories follow new files, so give mypy the import layout.
	@mkdir -p .mypy-src/hush && ln -sfn ../../daemon .mypy-src/hush/daemon && ln -sfn ../../tui .mypy-src/hush/tui
	MYPYPATH=.mypy-src $(BIN)/mypy -p hush.daemon -p hush.tui

test: $(VENV)/.installed-test
	$(BIN)/hush model pull $(TEST_MODEL)
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest
	@# CI keeps arm64 working: aarch64 wheels, daemon, store and policy under qemu (about 1 min
	@# warm; the first run builds ~/.cache/hush-arm64). `make test ARM64=skip` leaves it out.
	@if [ "$(ARM64)" != skip ]; then $(MAKE) --no-print-directory test-arm64-smoke; fi

# One heavy thing at a time; results in bench/results/, the report in docs/benchmarks.md.
BENCH_MODELS ?= smollm2-135m gemma3-270m qwen2.5-coder-0.5b
bench: $(VENV)/.installed-bench
	for m in $(BENCH_MODELS); do $(BIN)/hush model pull $$m || exit 1; done
	$(BIN)/python -m bench.run --models $$(echo $(BENCH_MODELS) | tr ' ' ',')

# Hostile input against real daemons (bench/hostile/); results in bench/results/redteam.json.
# As root, the attacks by another local user run as uid 65534. REDTEAM_ONLY=protocol,policy ...
redteam: $(VENV)/.installed-test
	$(BIN)/hush model pull $(TEST_MODEL)
	$(BIN)/python -m bench.redteam --model $(TEST_MODEL) $(if $(REDTEAM_ONLY),--only $(REDTEAM_ONLY))

test-models: $(VENV)/.installed-test
	$(BIN)/pytest -m models

# arm64 under qemu-user: tests/arm64/build.py caches a Debian arm64 sysroot and the aarch64
# wheels in ~/.cache/hush-arm64 (or $HUSH_ARM64_CACHE); root is needed once, for apt-get.
.PHONY: test-arm64 test-arm64-smoke
test-arm64: $(VENV)/.installed-test
	$(BIN)/hush model pull $(TEST_MODEL)
	$(BIN)/python tests/arm64/run.py

test-arm64-smoke: $(VENV)/.installed-test
	$(BIN)/python tests/arm64/run.py --smoke

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
