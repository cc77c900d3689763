# The two commands in the README: `make demo` and `make test`. Both set up
# everything they need on a fresh machine that has Python 3.11 and apt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DURATION ?= 60
APT_PACKAGES := kcat prometheus prometheus-alertmanager

.PHONY: setup sysdeps demo test lint typecheck unit clean

setup: $(VENV)/.installed sysdeps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# Debian packages the tests drive as independent peers (kcat reads our alert topic;
# prometheus and promtool load the rules and run every dashboard query;
# prometheus-alertmanager receives the bridge's alerts, and its amtool checks the
# shipped alertmanager.yml). `command -v` finds each by its package name.
sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: setup
	$(BIN)/streamer demo --duration $(DURATION)

# The shipped forecaster (models/bundles/default): trained on the synthetic
# fleet without anomalies, a few minutes on two CPU cores. The command is
# recorded in the bundle's bundle.json (training.command).
.PHONY: bundle
bundle: setup
	$(BIN)/streamer train --synthetic --out models/bundles/default --devices 200 --steps 3000 --epochs 20 --learning-rate 0.003 --max-sequences 60000 --seed 7

lint: setup
	$(BIN)/ruff check streamer models tests
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
