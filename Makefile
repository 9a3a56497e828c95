# gridwatch: one entry point for developers and CI (GNU make).
# `make test` works from a fresh clone on Debian 12, as root or with sudo.
PY ?= python3
VENV ?= .venv

.PHONY: venv system run test lint bench clean dashboards

venv: $(VENV)/.installed

# The stamp makes pip run again only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# Debian packages: mosquitto, mosquitto-clients, influxdb, postgresql (servers run privately).
system:
	PY=$(PY) bash stack/install-system-packages.sh

run: system venv
	$(VENV)/bin/gridwatch run

test: system venv
	$(VENV)/bin/pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Regenerate dashboards/generated/*.json from dashboards/ and devices/*/panels.py
# (tests/test_dashboards.py fails while the committed files differ).
dashboards: venv
	$(VENV)/bin/python -m dashboards

bench: system venv
	$(VENV)/bin/python bench/run.py

# The local stack's state: its servers' data and logs, the SQLite database.
clean:
	rm -rf .gridwatch
