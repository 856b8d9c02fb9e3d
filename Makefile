# nn-fundamentals course. From a fresh clone, `make demo`, `make test` and `make test-fast`
# need nothing but python3.11, make, npm and the package registries: they create .venv
# first, and `make test` installs what the browser and hub tests need (tests/system-deps).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Touched once .venv matches requirements.txt and pyproject.toml; make compares times.
STAMP := $(VENV)/.installed

.PHONY: venv build test test-fast system-deps lint demo grade bench clean distclean

venv: $(STAMP)

# Reruns whenever the pins or the package definition change. `python -m venv` on an
# existing .venv keeps what is installed, so a rerun only installs the difference. The
# stamp is written last: an install that fails halfway is retried next time.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install -e . --no-deps
	touch $@

# Regenerate figures, release/ and solutions/ from source/ (commit the result).
build: venv
	$(BIN)/nncourse build

lint: venv
	$(BIN)/ruff check .

# -n auto: the slow tests each build a course, mostly waiting on kernels and nbgrader
# subprocesses, so running them on both cores of a 2-core machine roughly halves the
# wall time; every test works in its own tmp dir and gradebook, so they can run side by
# side. Any non-zero pytest status fails make, "no tests collected" (5) included.
# --durations=30: the log names the slowest tests, where a slower CI run went.
test: venv lint system-deps
	$(BIN)/pytest -n auto --dist loadgroup --durations=30

# Chromium and acl from Debian (as root; otherwise it prints the command and fails) and
# JupyterHub's proxy from npm into .venv/node.
system-deps: venv
	tests/system-deps $(VENV)

# What a contributor runs while editing: the unit tests and the course's math, in seconds.
# No kernel, sandbox, database, browser, hub, root or package index; `make test` runs everything.
FAST := not (kernels or sandbox or postgres or browser or hub or root or registry)
test-fast: venv lint
	$(BIN)/pytest -m "$(FAST)"

demo: venv
	$(BIN)/nncourse demo

# Grade every new or changed submission in submitted/; JOBS=N sets the parallel kernels,
# SCHEDULER=tcp://HOST:PORT grades on the workers of that Dask scheduler instead.
JOBS ?=
SCHEDULER ?=
grade: venv
	$(BIN)/nncourse grade $(if $(JOBS),--jobs $(JOBS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER))

# Parallel grading against sequential nbgrader and the bare-kernel floor, in one run.
bench: venv
	$(BIN)/python bench/grading.py $(if $(JOBS),--jobs $(JOBS))

# Caches and build artefacts only; never the gradebook or student work.
clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
