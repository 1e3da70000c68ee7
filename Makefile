# PromptCanvas. `make dev` runs the product locally; `make test` runs the whole suite; `make test-unit` the unit tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STAGE ?= dev

.PHONY: install dev test test-unit lint demo bench package deploy deploy-web clean browser fuzz

install: $(STAMP)

# uv resolves and installs the pinned requirements in seconds; pip is the fallback if uv cannot run here.
$(STAMP): requirements.txt requirements-dev.txt scripts/find-python312.sh
	@test -x $(PY) || "$$(scripts/find-python312.sh)" -m venv $(VENV)
	($(PY) -m pip install -q --disable-pip-version-check uv==0.13.9 && $(PY) -m uv pip install -q --python $(PY) -r requirements-dev.txt) \
		|| $(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

# Debian's Chromium for the browser tests (Playwright's own download cannot work here).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

dev: install
	$(PY) -m devstack

test: install browser
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -n 3 --dist loadfile --durations=10

# The unit tests alone: no servers, seconds.
test-unit: install
	$(PY) -m pytest -q tests/unit

# The full Schemathesis run (with the coverage phase) against a fresh dev stack; `make test` runs a bounded one.
fuzz: install
	FUZZ_PHASES=examples,coverage,fuzzing FUZZ_DEADLINE_S=900 $(PY) -m pytest -q -p no:cacheprovider \
		tests/integration/test_openapi_contract.py -k schemathesis_finds_nothing -o timeout=1000

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: install
	$(PY) -m devstack.demo

bench: install package
	$(PY) -m bench

# The stack's template and code under $(PACKAGE_DIR) (sam.json + deployment.zip); see docs/deploy.md.
# infra/resources.json and .chalice/policy-*.json must match the code: `python -m infra.build` regenerates them.
# Chalice packages a clean copy of the project (no __pycache__), with its build cache in build/chalice-deployments
# (one build at a time: Chalice writes the cache file in place).
PACKAGE_DIR ?= build/package
PACKAGE_SRC = $(PACKAGE_DIR).src
package: install
	$(PY) -m infra.build --check
	rm -rf $(PACKAGE_DIR) $(PACKAGE_SRC) && mkdir -p $(PACKAGE_SRC)/.chalice build/chalice-deployments
	cp app.py requirements.txt $(PACKAGE_SRC)/
	$(PY) -m infra.build --stage $(STAGE) --out $(PACKAGE_SRC)/.chalice
	tar -cf - --exclude=__pycache__ --exclude='*.pyc' chalicelib | tar -xf - -C $(PACKAGE_SRC)
	ln -s $(CURDIR)/build/chalice-deployments $(PACKAGE_SRC)/.chalice/deployments
	cd $(PACKAGE_SRC) && AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} PYTHONDONTWRITEBYTECODE=1 \
		flock $(CURDIR)/build/chalice-deployments/.lock $(CURDIR)/$(VENV)/bin/chalice package --stage $(STAGE) --merge-template $(CURDIR)/infra/resources.json $(abspath $(PACKAGE_DIR))
	rm -rf $(PACKAGE_SRC)
	$(PY) -m infra.slim $(PACKAGE_DIR)/deployment.zip
	@ls -t build/chalice-deployments/*.zip 2>/dev/null | tail -n +4 | xargs -r rm -f  # keep 3 cached builds

# Deploy the packaged stack `promptcanvas-$(STAGE)` (boto3; needs AWS credentials and CLERK_ISSUER etc., see docs/deploy.md).
deploy: package
	$(PY) scripts/deploy.py deploy --stage $(STAGE) --package-dir $(PACKAGE_DIR)

# Write frontend_dist/config.js from the stack outputs, sync frontend_dist/ to the web bucket, invalidate CloudFront.
deploy-web: install
	$(PY) scripts/deploy.py web --stage $(STAGE)

clean:
	rm -rf build .local .pytest_cache
