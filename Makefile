# Stratus: `make demo` (install everything, run a VM end to end) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
GUEST_DIR ?= /var/tmp/stratus-guest  # outside the checkout: QEMU (libvirt-qemu) must reach it

.PHONY: install system-deps python-deps daemons guest demo demo-site test lint bench clean

install: system-deps python-deps daemons

system-deps:
	scripts/install-system.sh

python-deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | grep -v -e '^ *$$' -e 'Editable installation' || true
	touch $@

daemons:
	scripts/start-daemons.sh

guest: python-deps
	$(VENV)/bin/stratus image build-guest --output $(GUEST_DIR)

demo: install guest
	$(PY) scripts/demo_federation.py --guest-dir $(GUEST_DIR)

demo-site: install guest
	$(PY) scripts/demo.py --guest-dir $(GUEST_DIR)

test: install
	$(VENV)/bin/pytest -q -p no:cacheprovider

lint: python-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install guest
	$(PY) benchmarks/provision.py --guest-dir $(GUEST_DIR)
	$(PY) benchmarks/placement.py --write-doc
	$(PY) benchmarks/placement_e2e.py
	$(PY) benchmarks/auth.py --write-doc

clean:
	rm -rf build
