# The two commands a user needs: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench crds clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The factory example, nominal and with the factory uplink at 250 KB/s, and what moved.
demo: $(STAMP)
	$(BIN)/hetplace explain -f manifests/examples/factory/workload.yaml \
	  --pools manifests/examples/factory/pools \
	  --telemetry manifests/examples/factory/telemetry-250kbps.yaml --compare

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

crds: $(STAMP)
	$(BIN)/hetplace crds --out crds/

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
