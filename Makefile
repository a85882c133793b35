# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
# pytest-xdist workers for `make test-fast` (each has its own test database).
TEST_WORKERS ?= 2
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-installed
LOCAL := $(VENV)/.local-installed
DEV := $(VENV)/.dev-installed

.PHONY: run test test-fast screenshots lint audit bench clean-db help browser nginx pgbouncer deploy-check deploy-image-check systemd-analyze

help:
	@echo "make run   - everything up (embedded PostgreSQL unless DATABASE_URL), demo data, admin URL"
	@echo "make test  - lint, migration check and the whole test suite"
	@echo "make test-fast - lint, migration check and the tests that start no process or browser"
	@echo "make screenshots - the browser tests, updating the README's docs/screenshots/"
	@echo "make bench - journey intake benchmark (see docs/benchmarks.md)"
	@echo "make deploy-check - hadolint on the Dockerfile, compose.yaml read, the systemd units verified and run"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME): requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# What production installs is requirements.txt alone; `make run` and the tests add the embedded
# PostgreSQL (requirements-local.txt), the tests their tools (requirements-dev.txt).
$(LOCAL): requirements-local.txt $(RUNTIME)
	$(BIN)/pip install --quiet -r requirements-local.txt
	touch $@

$(DEV): requirements-dev.txt $(LOCAL)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(LOCAL) nginx
	HUB_DEBUG=$${HUB_DEBUG:-true} $(BIN)/python manage.py run_hub

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HUB_DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run

# The browser tests drive Debian's Chromium through Playwright: install it when it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }; }

# The web process runs behind nginx (deploy/nginx/hub.conf.template), in `make run` and in the
# slow-client tests as in production: install Debian's nginx when it is missing.
nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  echo "Installing Debian's nginx for the web front"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q nginx || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q nginx; }; }

# The tests behind PgBouncer (tests/test_pgbouncer.py, tests/test_multi_host.py) start Debian's
# pgbouncer in transaction mode: install it when it is missing.
pgbouncer:
	@command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || { \
	  echo "Installing Debian's pgbouncer for the pooler tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q pgbouncer || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q pgbouncer; }; }

# pytest's exit code 5 ("no tests collected") is a failure here, not a pass.
test: lint browser nginx pgbouncer systemd-analyze
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The loop while working: no gunicorn, qcluster, nginx or Chromium, so none is installed here.
test-fast: lint
	$(BIN)/python -m pytest -m "not slow and not browser" -n $(TEST_WORKERS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The browser tests save their screenshots under the git-ignored var/screenshots/ (so `make test`
# leaves the clone clean); this target has them replace the tracked ones the README shows.
screenshots: $(DEV) browser
	HUB_SCREENSHOTS_DIR=docs/screenshots $(BIN)/python -m pytest tests/test_browser.py

# Known vulnerabilities in the pinned requirements (PyPI's advisory data). Where the registry does
# not serve that data, pip-audit lists each package as skipped; it fails on any finding.
audit: $(DEV)
	$(BIN)/pip-audit -r requirements.txt --progress-spinner off

# The deployment files as far as this machine can check them (README, "Deploying"): hadolint
# (requirements-dev.txt) on the Dockerfile, compose.yaml read and checked (no registry here to
# run it), systemd-analyze on the units and their ExecStart lines run against the database.
deploy-check: $(DEV) systemd-analyze
	$(BIN)/hadolint Dockerfile
	$(BIN)/python -m pytest tests/test_deploy_files.py; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# A real build and run of the image where a Docker daemon runs but no registry answers: a base
# from Debian's packages, the wheels from this host's pip (deploy/check-image.sh says what it shows).
deploy-image-check: $(RUNTIME)
	deploy/check-image.sh

systemd-analyze:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  echo "Installing Debian's systemd for systemd-analyze"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q systemd || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q systemd; }; }

bench: $(DEV)
	HUB_DEBUG=true $(BIN)/python bench/journey_intake.py --events 2000

clean-db:
	rm -rf var/pgdata
