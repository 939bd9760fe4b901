# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gleitzeit-installed
PROJECTS := pyproject.toml \
	integrations/langchain-gleitzeit/pyproject.toml \
	integrations/llama-index-llms-gleitzeit/pyproject.toml \
	integrations/llama-index-embeddings-gleitzeit/pyproject.toml

.PHONY: venv test demo lint format clean chaos unasync

venv: $(STAMP)

# Re-installs only when a pyproject changes, so a second `make test` starts at once. The test tools
# are PEP 735 dependency groups (`--group`, pip >= 25.1: hence the pip upgrade first).
$(STAMP): $(PROJECTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check \
		-e '.[prometheus,redis,gateway]' \
		-e integrations/langchain-gleitzeit \
		-e integrations/llama-index-llms-gleitzeit \
		-e integrations/llama-index-embeddings-gleitzeit \
		--group test \
		--group integrations/langchain-gleitzeit/pyproject.toml:test
	@touch $(STAMP)

# Shared-state tests fail rather than skip when no redis-server can be found.
test: $(STAMP)
	GLEITZEIT_TEST_REQUIRE_REDIS=1 $(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m gleitzeit_llm.cli demo

# The long chaos profile: minutes of faults under load, then a report (the short one runs in make test).
chaos: $(STAMP)
	$(PY) tests/chaos/run.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) scripts/unasync.py --check

# The sync send chain and transport (gleitzeit_llm/_sync, gleitzeit_llm/ollama/_sync) are written
# from their async source (the _async packages beside them): run this after changing that source.
unasync: $(STAMP)
	$(PY) scripts/unasync.py

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# `make bench` (12-16 minutes on two shared cores, most of it 100,000 calls for the memory
# scenario, plus about 20 for the gateway one) or `make bench QUICK=1` (a smoke run of a few minutes):
# writes bench/results/<date>.json and the plots, and (full runs) the table in docs/performance.md.
BENCH_STAMP := $(VENV)/.gleitzeit-bench-installed
BENCH_ARGS ?=

.PHONY: bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)

# LiteLLM's proxy for the gateway scenario's side-by-side figures, in a venv of its own (never the
# project's): `make bench-litellm`, then `make bench`. Pinned: a LiteLLM release was compromised on
# PyPI in 2026 (1.107.0, reported and withdrawn), and 1.106.x is the newest line whose [proxy] extra installs without the
# separate litellm-proxy distribution.
LITELLM_VENV := bench/.venv-litellm
LITELLM_VERSION ?= 1.106.12
.PHONY: bench-litellm
bench-litellm:
	@test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install --quiet --disable-pip-version-check "litellm[proxy]==$(LITELLM_VERSION)"
