# The two commands a new user runs: `make demo` and `make test`. Both build their own
# virtualenvs from the checked-in lock files (pinned versions, packages only from PyPI).

PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
VENV32 := .venv-airflow-3.2
LOCK := requirements/lock-airflow-3.3.txt
LOCK32 := requirements/lock-airflow-3.2.txt
PYTEST_ARGS ?=

.PHONY: venv venv32 lint test test-main test-smoke-3.2 demo e2e e2e-cluster chaos bench bench-load lock clean dist wheel-check

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python -r $(LOCK) -e .
	touch $@

$(VENV32)/.installed: pyproject.toml $(LOCK32)
	$(PYTHON) -m venv $(VENV32)
	$(VENV32)/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV32)/bin/uv pip install -q --python $(VENV32)/bin/python -r $(LOCK32) -e .
	touch $@

venv: $(VENV)/.installed
venv32: $(VENV32)/.installed

LINT_PATHS := $(wildcard airflow_provider_anthropix tests example_dags benchmarks scripts)

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy airflow_provider_anthropix

# Full suite on the newest supported Airflow, then the smoke suite on the lowest (3.2.x).
test: lint test-main test-smoke-3.2

test-main: venv
	$(VENV)/bin/python -m pytest -q --durations=15 $(PYTEST_ARGS) tests

test-smoke-3.2: venv32
	$(VENV32)/bin/python -m pytest -q -m smoke $(PYTEST_ARGS) tests

demo: venv
	bash scripts/demo.sh

# A real deployment: emulator + api-server, dag-processor, scheduler, triggerer (LocalExecutor,
# SQLite) as separate processes; the example DAG triggered through the REST API.
e2e: venv
	bash scripts/e2e.sh

# The same deployment with faults: killed triggerer, killed worker after create, API outage,
# cut results stream, fetch killed mid-way (see docs/reliability.md).
chaos: venv
	bash scripts/e2e.sh --chaos

# The Batches page in a real browser: emulator + api-server with the plugin and real users,
# headless Chromium (Debian's, installed with apt-get when missing), 1280x800; screenshots in out/e2e-ui/
# (ignored by git: the check never writes a tracked file).
.PHONY: e2e-ui
e2e-ui: venv
	bash scripts/e2e_ui.sh

# A production-shaped deployment: PostgreSQL, CeleryExecutor on Redis, two workers, two
# triggerers, results in an S3 server; chaos and load included (see docs/deployment.md).
e2e-cluster: venv
	bash scripts/e2e_cluster.sh

bench: venv
	$(VENV)/bin/python benchmarks/bench_emulator.py
	$(VENV)/bin/python benchmarks/bench_export.py
	$(VENV)/bin/python benchmarks/bench_create.py
	$(VENV)/bin/python benchmarks/bench_trigger_fanin.py
	$(VENV)/bin/python benchmarks/bench_in_task.py
	$(VENV)/bin/python benchmarks/bench_job.py
	$(VENV)/bin/python benchmarks/bench_cli.py
	$(VENV)/bin/python benchmarks/bench_table.py

bench-load: venv
	$(VENV)/bin/python benchmarks/bench_load_faults.py

# The release artifacts: sdist and wheel in dist/ (hatchling, pinned by the lock file as build
# constraints), checked by twine the way PyPI would render and accept them.
dist: venv
	rm -rf dist
	$(VENV)/bin/uv build -q --build-constraint $(LOCK) --out-dir dist
	$(VENV)/bin/twine check --strict dist/*

# The wheel installed (not editable) into a fresh venv with the lock as constraints:
# providers list, the emulator and the nightly DAG, from the artifact alone.
wheel-check: dist
	bash scripts/wheel_check.sh

# Regenerate the lock files (needs the package index; not part of test or demo).
lock:
	uv pip compile pyproject.toml --extra test --extra parquet -c requirements/airflow-3.3.in \
		-o $(LOCK) --python-version 3.11
	uv pip compile pyproject.toml --extra test --extra parquet -c requirements/airflow-3.2.in \
		-o $(LOCK32) --python-version 3.11

clean:
	rm -rf $(VENV) $(VENV32) out .demo .pytest_cache .mypy_cache .ruff_cache dist
