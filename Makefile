# Pigeon — the two commands of the README: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-test run test test-deps typecheck lint-imports clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Idempotent: reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/pigeon serve

# Debian packages the integration tests drive (real clients); installed only when missing.
# Each entry is command:package (the command that must exist, the package that provides it).
DEB_TEST_PKGS := ss:iproute2 swaks:swaks msmtp:msmtp fetchmail:fetchmail mutt:mutt mbsync:isync openssl:openssl systemd-analyze:systemd pebble:pebble rspamd:rspamd
test-deps:
	@missing=""; for e in $(DEB_TEST_PKGS); do c=$${e%%:*}; p=$${e#*:}; command -v $$c >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (install them, or run as root)"; exit 1; fi; fi

typecheck: install-test
	$(BIN)/mypy

# The layer contracts of pyproject.toml [tool.importlinter] (docs/architecture.md, "Layers").
lint-imports: install-test
	$(BIN)/lint-imports

test: install-test test-deps
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 --dist worksteal -q

clean:
	rm -rf $(VENV) pigeon-data
