# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean bench

# the demo needs the package alone; the tests also need the test, export and ray extras
$(BASE): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; set PY=python3.x (>= 3.11)"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(BASE)

$(STAMP): $(BASE)
	$(BIN)/python -m pip install --quiet -e '.[test,export,ray]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(BASE)
	$(BIN)/mammodecomp demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python bench/decompose.py --quick

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
