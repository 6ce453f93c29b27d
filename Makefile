# Arctic: `make demo` (a lab cluster really carrying traffic) and `make test` (the whole suite).
# Both install what they need, idempotently: Debian packages (as root) and a virtualenv in .venv.

SHELL        := /bin/bash
PYTHON       ?= python3
VENV         := .venv
PY           := $(VENV)/bin/python
APT_PACKAGES := nftables iproute2 iperf3 haproxy kcptun dnsmasq-base jq sqlite3 openssh-server netplan.io procps psmisc prometheus
PYTEST_ARGS  ?=

.PHONY: help deps apt venv lint test test-fast demo bench clean

help:
	@echo "make demo   - lab cluster in network namespaces; a service carries real traffic"
	@echo "make test   - lint + the whole suite (unit, API, CLI, lab, Ansible)"
	@echo "make bench  - benchmarks, printing ratios against their anchors"

deps: apt venv

apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo ">> installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[fleet,test]'
	@touch $@

lint: venv
	$(VENV)/bin/ruff check agent tests bench collections playbooks

# pytest exits 5 when it collected nothing; that is a failure here, like any other non-zero code.
# ARCTIC_NO_SKIPS=1: here everything is installed and we are root, so a skipped test fails (tests/conftest.py).
test: deps lint
	ARCTIC_NO_SKIPS=1 $(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest tests -m "not lab" $(PYTEST_ARGS)

demo: deps
	$(PY) tests/demo.py

bench: deps
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info agent/*.egg-info .pytest_cache .ruff_cache
