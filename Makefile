# Two entry points: `make run` and `make test`. Each one builds .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned: pip takes this build from the machine's local package index.
# GPU users: set TORCH_SPEC to the CUDA build they want, e.g.
#   make run TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: run test test-fast setup lint bench clean chromium vendor-litegraph screenshot

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# The demo: the house model's txt2img workflow (models/checkpoints/latentgraph-house-v1), then the server.
run: $(STAMP)
	$(PY) -m graph run workflows/txt2img_api.json
	$(PY) server.py --listen 127.0.0.1 --port 8188

test: $(STAMP) chromium
	$(PY) -m ruff check .
	$(PY) -m pytest

# The developer's lane: everything but the tests marked slow (house-model quality, browsers).
test-fast: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow" -q

# The editor's browser tests drive Debian's Chromium through Playwright (no browser download).
# (root installs directly; anyone else through sudo.)
SUDO := $(shell test "$$(id -u)" -eq 0 || echo sudo)
chromium:
	@test -x /usr/bin/chromium || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# Refresh the vendored graph-editor library (needs npm; `make run` and the tests do not).
vendor-litegraph:
	tools/vendor_litegraph.sh

# docs/editor.png: the editor with the default workflow, after one queued prompt.
screenshot: $(STAMP) chromium
	$(PY) tools/editor_screenshot.py --output docs/editor.png

bench: $(STAMP)
	$(PY) bench/engine_overhead.py

clean:
	rm -rf $(VENV) output temp
