# The two newcomer commands are `make demo` and `make test`; both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: setup browser demo test bench lint clean

RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed

# `make demo` installs the package and its runtime dependencies only; `make test` (and lint, bench)
# add the dev extra: test tools, reference implementations, trainers' interop stacks.
setup: $(DEV)

$(RUNTIME): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# dghs-imgutils: the reference of the ONNX scorers' fidelity test; it declares numpy<2 and
	# opencv-contrib, which would replace this stack's, so it goes in without its requirements
	$(BIN)/python -m pip install --quiet --no-deps dghs-imgutils==0.19.0 pyrfc6266==1.0.2
	touch $(DEV)

# Debian's chromium, for the audit report's headless render test (which skips without it).
# Best effort: only as root with apt-get, and a failure only means that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
	    >/dev/null; } || echo "make browser: no chromium; the HTML report render test will skip"

demo: $(RUNTIME)
	$(BIN)/python -m pipelines.demo --out $(DEMO_OUT)

test: $(DEV) browser
	$(BIN)/python -m pytest -q

bench: $(DEV)
	@$(BIN)/linepairs bench

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
