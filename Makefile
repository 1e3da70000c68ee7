# PromptCanvas. `make dev` runs the product locally; `make test` runs the whole suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STAGE ?= dev

.PHONY: install dev test lint demo bench package clean browser

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt scripts/find-python312.sh
	@test -x $(PY) || "$$(scripts/find-python312.sh)" -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

# Debian's Chromium for the browser tests (Playwright's own download cannot work here).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

dev: install
	$(PY) -m devstack

test: install browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check . || true

demo: install
	$(PY) -m devstack.demo

bench: install
	$(PY) -m bench

package: install
	rm -rf build/package && mkdir -p build
	$(VENV)/bin/chalice package --stage $(STAGE) --merge-template infra/resources.json build/package
	@ls -l build/package/deployment.zip | awk '{printf "deployment.zip: %.1f MiB\n", $$5/1048576}'

clean:
	rm -rf build .local .pytest_cache
