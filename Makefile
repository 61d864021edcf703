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

# MLServer, the KServe-V2 server tritonclient talks to in the tests (DESIGN §6), in a venv of its own:
# it wants importlib-resources<7 and brings fastapi, pandas and gevent, none of which the operator needs.
# It supports Python 3.9 to 3.12 (`make MLSERVER_PYTHON=python3.12 test` picks another).
MLSERVER_PYTHON ?= $(PYTHON)
MLSERVER_VENV := .venv-mlserver
MLSERVER_STAMP := $(MLSERVER_VENV)/.installed

$(MLSERVER_STAMP): tests/mlserver/requirements.txt
	$(MLSERVER_PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install --quiet --upgrade pip==26.3
	$(MLSERVER_VENV)/bin/pip install --quiet -r tests/mlserver/requirements.txt
	touch $(MLSERVER_STAMP)

DEMO_PLOT := demo-out/factory-bandwidth-drop.png

# The factory's uplink drops to 250 KB/s for 30 minutes: every policy compared, and the plot.
demo: $(STAMP)
	$(BIN)/hetplace simulate manifests/examples/factory-bandwidth-drop.yaml --policy all --plot $(DEMO_PLOT)
	@echo "The plot (each route's latency against its SLO per policy, and cost) is at $(CURDIR)/$(DEMO_PLOT)"

test: $(STAMP) $(MLSERVER_STAMP) tools
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

crds: $(STAMP)
	$(BIN)/hetplace crds --out crds/

clean:
	rm -rf $(VENV) $(MLSERVER_VENV) .pytest_cache .hypothesis demo-out
