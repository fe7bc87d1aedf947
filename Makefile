# Two commands for a fresh Debian 12 machine, as root:  `make demo`  and  `make test`.
# Both are idempotent: Debian packages are installed only when missing, the virtualenv only when stale.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := .make
DEB_PACKAGES := python3-venv mosquitto mosquitto-clients ceph-mon ceph-mgr ceph-osd radosgw ceph-common \
                ffmpeg postgresql-15 postgresql-15-postgis-3 prometheus iproute2 procps curl uuid-runtime \
                chromium chromium-driver fonts-nanum
TYPED  := contract common agent collector camsim

.PHONY: help install deb venv lint types test test-fast demo bench contract-docs clean

help:
	@echo "make demo   install everything, start a local stack of three districts, work an incident across them"
	@echo "make test   install everything, then lint, types and the whole test suite"
	@echo "make bench  run every benchmark and write BENCHMARKS.md"

install: deb venv

deb: $(STAMP)/deb
$(STAMP)/deb: Makefile
	@mkdir -p $(STAMP)
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@touch $@

# The stamp lives inside the virtualenv: deleting .venv means installing again.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml | $(STAMP)/deb
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: venv
	$(BIN)/mypy $(TYPED)

test: install lint types
	$(BIN)/python -m pytest -q -ra

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

demo: install
	bash deploy/dev/demo.sh

bench: install
	$(BIN)/python -m bench.all

contract-docs: venv
	$(BIN)/python -m contract.schema --out docs/contract

clean:
	rm -rf $(STAMP) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
