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

.PHONY: help setup system-deps broker-deps micropython run demo config test test-fast test-stress lint audit firmware deploy repl logs boot-log bench soak clean distclean

help:
	@echo "make run        start the central system with its embedded defaults"
	@echo "make test       set everything up and run the whole test suite"
	@echo "make demo       server + a board on this machine + a car charging (RUNTIME=micropython for the Unix port)"
	@echo "make test-fast  the unit tests only (pure functions, pytest -m unit): seconds, needs only the venv"
	@echo "make test-stress  the whole suite beside a busy process on every core (tools/cpu_hog.py)"
	@echo "make firmware   compile the firmware to build/firmware/ (.mpy, ready for a board)"
	@echo "make config     write config.local.json for a board (asks; registers the station with TOKEN=...)"
	@echo "make deploy PORT=/dev/ttyACM0   flash a Pico W over USB with mpremote"
	@echo "make repl       open the board's REPL        make logs   follow the board's log (no reset; Ctrl-C stops following only)"
	@echo "make boot-log   reset the board (clean reboot) and watch the boot"
	@echo "make bench      run the scalability benchmark"
	@echo "make soak       outage soak: a board through 2 h of outages (SOAK_MINUTES=120, report in $(SOAK_OUT)/)"
	@echo "make lint       ruff on the host code"
	@echo "make audit      security audit: bandit, pip-audit, a wapiti scan of a running server (reports in var/audit/)"

# --- setup -----------------------------------------------------------------------------
# Two installs in one venv: $(VENV)/.installed, what the server, the demo and the board tools
# (firmware, deploy, repl, logs) run on (pyproject's dependencies); $(VENV)/.installed-dev,
# the [dev] extras on top (pytest, ruff, playwright, the audit tools) for the tests and the
# other developer targets. `make test` after `make run` adds the extras.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "[setup] $(PYTHON) not found: apt-get install python3, or make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	@$(PYTHON) tools/python_check.py --goals "$(MAKECMDGOALS)"
	@$(call make_venv)
	$(PY) -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# Developer targets defined further down take the [dev] extras too.
lint audit: $(VENV)/.installed-dev

# The venv, unless one with pip is there. `python3 -m venv` needs ensurepip, which Debian and
# Ubuntu package apart: python3-venv, and the versioned python3.X-venv of the Python that
# $(PYTHON) is (Ubuntu 24.04's python3.12-venv; python3-venv does not cover a PYTHON=python3.11
# beside the system's python3). Installed when the venv cannot be created; creating it again
# completes the venv without pip that the failed attempt left.
define make_venv
	if ! $(PY) -m pip --version >/dev/null 2>&1; then \
	  echo "[setup] creating $(VENV) with $(PYTHON)"; \
	  if ! $(PYTHON) -m venv $(VENV) >/dev/null 2>&1; then \
	    $(call apt_install_missing,python3-venv); \
	    if ! $(PYTHON) -m venv $(VENV) >/dev/null 2>&1; then \
	      $(call apt_install_missing,$$($(PYTHON) tools/python_check.py --venv-package)); \
	      $(PYTHON) -m venv $(VENV) || { \
	        echo "[setup] $(PYTHON) -m venv cannot create $(VENV): as root, apt-get install python3-venv $$($(PYTHON) tools/python_check.py --venv-package), then run make again" >&2; \
	        exit 1; }; \
	    fi; \
	  fi; \
	  $(PY) -m pip install --quiet --upgrade pip; \
	fi
endef

setup: $(VENV)/.installed-dev system-deps micropython

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

# The whole system on this machine with a car charging (tools/demo.py): Ctrl-C stops it all.
RUNTIME ?= cpython
demo: $(VENV)/.installed broker-deps $(if $(filter micropython,$(RUNTIME)),micropython)
	$(PY) -m tools.demo --runtime $(RUNTIME) $(ARGS)

# The pure functions of the firmware and the server (tests marked `unit`): no boards, brokers,
# servers or MicroPython build, so only the venv; one process (xdist's start-up costs more
# than these tests take).
test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -m unit -p no:randomly -q -n 0

# The whole suite on a machine kept busy on purpose: timing that only holds when idle fails here.
test-stress: setup
	$(PY) -m tools.cpu_hog -- $(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# --- firmware and boards -----------------------------------------------------------------
firmware: $(VENV)/.installed
	$(PY) -m tools.deploy build

# A board's config.local.json, asked for (tools/board_config.py); with TOKEN=<an API token>
# (or PICOCHARGE_ADMIN_TOKEN) the station is registered on the server with its key too.
config: $(VENV)/.installed
	$(PY) -m tools.board_config --config $(BOARD_CONFIG) $(if $(TOKEN),--token $(TOKEN)) $(ARGS)

deploy: $(VENV)/.installed
	$(PY) -m tools.deploy flash --port $(PORT) --config $(BOARD_CONFIG)

repl: $(VENV)/.installed
	$(VENV)/bin/mpremote connect $(PORT) repl

# Follows the log without disturbing the board: the last lines on flash, then live (no
# Ctrl-C sent to it, no reset); Ctrl-C stops following only.
logs: $(VENV)/.installed
	$(PY) -m tools.deploy logs --port $(PORT)

# Reset and watch the boot: a clean reboot (contactor open, energy saved), then `logs`.
boot-log: $(VENV)/.installed
	$(PY) -m tools.deploy boot-log --port $(PORT)

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
