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

DEMO_PLOT := demo-out/factory-bandwidth-drop.png

# The factory's uplink drops to 250 KB/s for 30 minutes: every policy compared, and the plot.
demo: $(STAMP)
	$(BIN)/hetplace simulate manifests/examples/factory-bandwidth-drop.yaml --policy all --plot $(DEMO_PLOT)
	@echo "The plot (each route's latency against its SLO per policy, and cost) is at $(CURDIR)/$(DEMO_PLOT)"

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

crds: $(STAMP)
	$(BIN)/hetplace crds --out crds/

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo-out
