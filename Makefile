# Two commands on a fresh machine: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JARS := .ketch/jars/manifest.json

PACKAGE_FILES = $(shell find -L ketch_spark -type f ! -path '*/__pycache__/*' ! -name '*.pyc')

.PHONY: install demo test test-slow test-all bench clean-data zip postgres chromium

install: $(STAMP) $(JARS) postgres chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(JARS): $(STAMP) ketch_spark/jars.py ketch_spark/extensions.py ketch_spark/jvm/KeptKeySets.scala ketch_spark/log_store.py ketch_spark/jvm/DynamoDBLogStore.scala
	$(BIN)/python -m ketch_spark.jars install

# PostgreSQL server binaries (initdb, pg_ctl) from Debian, for the warehouse connector's tests.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { echo "installing PostgreSQL from Debian packages"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || \
	    { echo "could not install PostgreSQL: run 'apt-get install postgresql' as root"; exit 1; }; }

# ketch_spark.zip: the package with its data files (log4j2.properties, jvm/), not conf/, for
# `spark-submit --py-files` (README: "On a cluster"); ignored by git. No venv needed.
zip: ketch_spark.zip

ketch_spark.zip: $(PACKAGE_FILES)
	@rm -f $@
	@$(PYTHON) -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED); [z.write(f) for f in sorted(sys.argv[2:])]; z.close()' $@ $(PACKAGE_FILES)
	@echo "built $@ ($(words $(PACKAGE_FILES)) files): spark-submit --py-files $@ ..."

# Chromium from Debian, for the report test (it opens the HTML report headless); optional: install goes
# on without it, and the test's browser checks skip.
chromium:
	@test -x /usr/bin/chromium || \
	  { echo "installing Chromium from Debian packages (tests/test_report.py opens the HTML report headless)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "could not install Chromium: run 'apt-get install chromium' as root; the report test's browser checks skip without it"; }

demo: install
	$(BIN)/ketch-spark demo

test: install
	$(BIN)/python -m pytest

# End-to-end runs (demo, spark-submit jobs, notebooks), a few minutes each; CI runs them after `make test`.
test-slow: install
	$(BIN)/python -m pytest -m slow

test-all: test test-slow

bench: install
	$(BIN)/python tests/benchmarks/run.py $(BENCH)

clean-data:
	rm -rf ketch-data spark-warehouse
