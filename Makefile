# The two set-up commands of the README: `make demo` and `make test`.
# Each creates ./.venv (if needed) and installs the project with the pinned versions of constraints.txt.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export OMP_NUM_THREADS ?= 2

.PHONY: install demo demo-full test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

# The demo samples the generator shipped in the package (pretrained:toy40); demo-full trains one here instead.
demo: $(STAMP)
	$(BIN)/scoremix demo --out demo_out

demo-full: $(STAMP)
	$(BIN)/scoremix demo --full --out demo_full_out

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m pytest --durations=15 -q

bench: $(STAMP)
	$(BIN)/python benchmarks/recordio_read.py

clean:
	rm -rf $(VENV) demo_out demo_full_out .pytest_cache
