SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
# The one torch build we run on: a local CPU wheel reached through the machine's pip config.
# It is installed first and named again below, so pip never resolves torch on its own.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv redis chromium test lint serve demo train-backbone train-judge eval clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install '$(TORCH)'
	$(PY) -m pip install '$(TORCH)' -e '.[dev]'
	touch $@

redis:
	bash deploy/ensure_redis.sh

# Debian's Chromium for the playground's browser test; never fails (without it that test skips, saying why).
chromium:
	bash deploy/ensure_chromium.sh

# The fast suite; slow tests run with DIFFPLEX_SLOW=1, GPU tests where CUDA is present (tests/conftest.py).
# pytest exits 5 when it collects nothing: that is a broken suite, not a pass.
test: venv redis chromium
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [[ $$status -eq 5 ]]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

lint: venv
	$(VENV)/bin/ruff check .

serve: venv
	$(VENV)/bin/diffplex serve

# Against a running server (`make serve` in another terminal): a fresh tenant, the shipped adapters uploaded,
# one labelled grid in .work/demo/demo.png and a curl line per request.
demo: venv
	$(VENV)/bin/diffplex demo

train-backbone: venv
	$(VENV)/bin/diffplex train-backbone

train-judge: venv
	$(VENV)/bin/diffplex train-judge

eval: venv
	$(VENV)/bin/diffplex eval

# Caches and build outputs only: the venv and .work/ (training checkpoints) are kept.
clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
