# PicoCharge: every entry point. `make run` and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= .cache
MICROPYTHON := $(CACHE)/bin/micropython
UMQTT := $(CACHE)/mplib/umqtt/simple.py
PORT ?= /dev/ttyACM0
BOARD_CONFIG ?= config.local.json
SOAK_MINUTES ?= 120
SOAK_OUT ?= results/soak
# pytest-xdist workers as many as this host carries now (tests/hostpace.py measures its CPU
# share and wake-up lag; PICOCHARGE_TEST_WORKERS=N decides instead), longest tests first
# (tests/scheduling.py).
PYTEST_ARGS ?= -n auto
SYSTEM_PACKAGES := build-essential gcc-multilib mosquitto chromium

.PHONY: help setup system-deps broker-deps micropython run test test-fast test-stress lint audit firmware deploy repl logs bench soak clean distclean

help:
	@echo "make run        start the central system with its embedded defaults"
	@echo "make test       set everything up and run the whole test suite"
	@echo "make test-fast  the unit tests only (pure functions, pytest -m unit): seconds, needs only the venv"
	@echo "make test-stress  the whole suite beside a busy process on every core (tools/cpu_hog.py)"
	@echo "make firmware   compile the firmware to build/firmware/ (.mpy, ready for a board)"
	@echo "make deploy PORT=/dev/ttyACM0   flash a Pico W over USB with mpremote"
	@echo "make repl       open the board's REPL        make logs   follow the board's log"
	@echo "make bench      run the scalability benchmark"
	@echo "make soak       outage soak: a board through 2 h of outages (SOAK_MINUTES=120, report in $(SOAK_OUT)/)"
	@echo "make lint       ruff on the host code"
	@echo "make audit      security audit: bandit, pip-audit, a wapiti scan of a running server (reports in var/audit/)"

# --- setup -----------------------------------------------------------------------------
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

setup: $(VENV)/.installed system-deps micropython

# Install the Debian packages given as $(1) that are missing; needs root or sudo.
define apt_install_missing
	missing=""; \
	for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "[setup] installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

# Debian packages the tests use (the broker and browser they start themselves, a C
# compiler and 32-bit C library for the MicroPython build). Installed only when missing.
system-deps:
	@$(call apt_install_missing,$(SYSTEM_PACKAGES))

# The embedded broker `make run` starts: Mosquitto, persistent. Without it the server
# falls back to the pip-only amqtt broker (in memory only) and says so.
broker-deps:
	@$(call apt_install_missing,mosquitto) || echo "[run] could not install mosquitto: the server falls back to amqtt"

micropython: $(VENV)/.installed
	$(PY) -m tools.fetch all --cache $(CACHE)

# --- the two commands --------------------------------------------------------------------
run: $(VENV)/.installed broker-deps
	$(PY) -m server $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The pure functions of the firmware and the server (tests marked `unit`): no boards, brokers,
# servers or MicroPython build, so only the venv; one process (xdist's start-up costs more
# than these tests take).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -m unit -p no:randomly -q -n 0

# The whole suite on a machine kept busy on purpose: timing that only holds when idle fails here.
test-stress: setup
	$(PY) -m tools.cpu_hog -- $(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# --- firmware and boards -----------------------------------------------------------------
firmware: $(VENV)/.installed
	$(PY) -m tools.deploy build

deploy: $(VENV)/.installed
	$(PY) -m tools.deploy flash --port $(PORT) --config $(BOARD_CONFIG)

repl: $(VENV)/.installed
	$(VENV)/bin/mpremote connect $(PORT) repl

logs: $(VENV)/.installed
	$(PY) -m tools.deploy logs --port $(PORT)

bench: setup
	$(PY) -m tools.bench $(ARGS)

# The security audit (tools/audit.py): static scan, known-vulnerable dependencies, and an
# active web scan of a server it starts on 127.0.0.1 (Debian's wapiti, installed if missing).
audit: $(VENV)/.installed
	@$(call apt_install_missing,wapiti)
	$(PY) -m tools.audit $(ARGS)

soak: setup
	$(PY) -m tests.outage_soak --minutes $(SOAK_MINUTES) --out $(SOAK_OUT) $(ARGS)

clean:
	rm -rf build .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) $(CACHE) var
