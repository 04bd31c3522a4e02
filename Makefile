# The two set-up commands of the README. Both install into the active Python environment.
PY ?= python3
PIP = $(PY) -m pip install -q --disable-pip-version-check
export NASFORGE_HOME ?= $(CURDIR)/.nasforge

.PHONY: install install-test quickstart test lint bench

install:
	$(PIP) -e .

install-test:
	$(PIP) -e '.[test]'
	bash scripts/test-setup.sh

quickstart: install
	nasforge submit examples/quickstart.yaml
	nasforge export $$(nasforge list --json | $(PY) scripts/latest_job.py quickstart) --best accuracy -o quickstart-best

test: install-test
	bash scripts/run-tests.sh

lint:
	$(PY) -m ruff check nasforge tests benchmarks
	lint-imports
	$(PY) -m mypy

bench:
	$(PY) -m benchmarks $(NAME)
