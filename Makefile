# nn-fundamentals course. From a fresh clone, `make test` and `make demo` need nothing
# but python3.11 and the package registries: they create .venv first.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Touched once .venv matches requirements.txt and pyproject.toml; make compares times.
STAMP := $(VENV)/.installed

.PHONY: venv build test lint demo grade bench clean distclean

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
test: venv lint
	$(BIN)/pytest -n auto --dist loadgroup

demo: venv
	$(BIN)/nncourse demo

# Grade every new or changed submission in submitted/; JOBS=N sets the parallel kernels.
JOBS ?=
grade: venv
	$(BIN)/nncourse grade $(if $(JOBS),--jobs $(JOBS))

# Parallel grading against sequential nbgrader and the bare-kernel floor, in one run.
bench: venv
	$(BIN)/python bench/grading.py $(if $(JOBS),--jobs $(JOBS))

# Caches and build artefacts only; never the gradebook or student work.
clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
