# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv deps demo test lint typecheck unit integration bench bench-quick sandbox clean

# Ceph RGW, the second S3 server of the integration tests: Debian packages, installed here when missing.
CEPH_PACKAGES := ceph-mon ceph-osd radosgw ceph-common

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

deps:
	@if command -v radosgw >/dev/null && command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null \
	    && command -v radosgw-admin >/dev/null && command -v ceph >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Ceph for the RGW tests: $(CEPH_PACKAGES)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CEPH_PACKAGES); \
	else \
	    echo "the RGW tests need Ceph: as root, run apt-get install -y $(CEPH_PACKAGES)" >&2; exit 1; \
	fi

demo: $(STAMP)
	$(BIN)/rekey demo

lint: $(STAMP)
	$(BIN)/ruff check engine workers tests bench
	$(BIN)/mypy

test: lint deps
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP) deps
	$(BIN)/python -m pytest -q tests/integration

sandbox: $(STAMP)
	$(BIN)/rekey sandbox

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
