# The two commands of the README: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := docker.io docker-compose redis-server debootstrap busybox-static wireguard-go wireguard-tools iptables iproute2

.PHONY: demo test lint deps sysdeps venv images offline-images compose-smoke bench reliability clean

# hivemind demo starts dockerd itself when it is installed but not running (and stops
# it after); DEMO_ARGS passes options, e.g. DEMO_ARGS=--exit-when-done.
demo: deps
	$(BIN)/hivemind demo $(DEMO_ARGS)

test: deps
	scripts/with-services.sh $(BIN)/pytest $(PYTEST_ARGS)

# ruff (style, imports, likely bugs; the format) and mypy (types), all configured in pyproject.toml.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

deps: sysdeps venv

# System packages, only when something is missing (needs root or sudo).
sysdeps:
	@missing=""; for cmd in dockerd docker-compose redis-server debootstrap busybox wireguard-go wg iptables ip; do \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$cmd"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages (missing:$$missing)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES); \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

images:
	scripts/build-images.sh

# Base, Redis and site images for docker-compose.yml, with no registry.
offline-images: deps
	scripts/build-offline-images.sh

# Boots the compose site for real, runs a task through it, tears it down (a few minutes).
compose-smoke: deps
	scripts/compose-smoke.sh

bench: deps
	scripts/with-services.sh sh -c 'for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done'

# The fault drills at full size (20 worker kills, a 60 s Node Pool outage, ...):
# figures into docs/RELIABILITY.md. Needs root (tmpfs, a second dockerd).
reliability: deps
	scripts/with-services.sh $(BIN)/python bench/fault_drills.py $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
