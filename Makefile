# The two commands a user needs: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench crds clean tools

# Real parts the tests run (DESIGN §6): Debian's prometheus brings promtool and the server.
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus (promtool) for the tests"; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

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

test: $(STAMP) tools
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

crds: $(STAMP)
	$(BIN)/hetplace crds --out crds/

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo-out
