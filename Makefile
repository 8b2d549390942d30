# Two commands: `make book` builds the book into _build/html, `make test` runs the test suite.
# Both create .venv (Python 3.11) and install the pinned requirements and the package first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dln-book-installed
PYTEST_ARGS ?=
# pytest-xdist workers: the suite waits part of its time (kernels starting, pip, Chromium, sleeps
# in the fault tests), so one worker more than the 2 cores of the project's machine; the tests
# of one expensive fixture (Chromium, the pages it visits) go to one worker, and what several
# workers read (the smoke book, a chapter 1 run) is built once for all (tests/conftest.py).
TEST_JOBS ?= 3

.PHONY: book test lint env clean

env: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the lock or the package metadata changed.
$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -e .
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W --keep-going
	@echo
	@echo "Book built. Open: file://$(CURDIR)/_build/html/index.html"

# The workflow files are checked against GitHub's schema as vendored in check-jsonschema (offline).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

# Bytecode caches on even where the machine turns them off (PYTHONDONTWRITEBYTECODE): the suite
# starts some 150 Python processes (kernels, commands, builds) that import the project, and the
# workers rewrite every test module's asserts; without the caches each does it again.
test: lint
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup $(PYTEST_ARGS)

clean:
	rm -rf _build
