# Quick start: `make demo` or `make test`. Both create .venv on first use and are fast after.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-all bench lint clean bundle

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[gui,test,bench,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/octop2p run examples/primes -w 2 -o $(VENV)/demo-primes-results
	@echo "--- primes below 10^7 (expected 664579):"
	@cat $(VENV)/demo-primes-results/count.txt

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check octop2p protocol sandbox gui tests bench
	$(BIN)/mypy octop2p protocol sandbox

# The desktop bundle (PyInstaller, one folder): dist/octop2p/octop2p, GUI included. Then run
# the bundled `octop2p run examples/primes` and check its answer (packaging/check_bundle.py).
bundle: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[gui,packaging]'
	$(BIN)/pyinstaller --noconfirm --clean --log-level WARN \
		--distpath dist --workpath build/pyinstaller packaging/octop2p.spec
	$(BIN)/python packaging/check_bundle.py dist/octop2p

clean:
	rm -rf $(VENV) build dist *.egg-info
