# The README's two commands: `make run` and `make test`. Both create/refresh .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ENV ?= local
# Two workers, one test file each at a time (module fixtures are built once); `PYTEST_ARGS=-n0` runs serially.
PYTEST_ARGS ?= -n 2 --dist loadfile
export TF_USE_LEGACY_KERAS := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0

.PHONY: venv run run-online-retail test lint bench sql mlflow-ui airflow-venv clean-lakehouse wheel

venv:
	@bash scripts/bootstrap.sh

## run: the main job on the embedded default (simulator -> lakehouse), end to end
run: venv
	$(PY) jobs/run_pipeline.py --env $(ENV)

## run-online-retail: the same pipeline on real data (UCI Online Retail from data.dir), in its own lakehouse
run-online-retail: venv
	$(PY) jobs/run_pipeline.py --env $(ENV) --source online_retail --steps ingest,training_set,train,evaluate \
		--conf-override lakehouse.root=lakehouse-online_retail

## wheel: the library as a pure-Python wheel in dist/ (spark-submit --py-files, the bundle's artifact)
wheel: venv
	$(PY) -m pip wheel --no-deps --no-build-isolation -q -w dist .
	@ls dist/shopper_profiles-*.whl

## test: the whole test suite (slow tests included)
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check lib jobs tests
	$(VENV)/bin/mypy lib

## bench: benchmarks (not tests); results land in docs/BENCHMARKS.md's raw folder
bench: venv
	$(PY) -m shopper_profiles.bench --env $(ENV)

## mlflow-ui: the MLflow UI over this env's store on http://127.0.0.1:$(PORT) (one worker)
PORT ?= 5000
mlflow-ui: venv
	@$(PY) -m shopper_profiles.model.ui --env $(ENV) --port $(PORT)

## airflow-venv: Airflow 3.3 + the Spark and Databricks providers in their own cached venv (prints its folder)
airflow-venv:
	@bash scripts/airflow_venv.sh

## sql: interactive SQL (DuckDB over the Delta tables) with the analyst tables and views registered
sql: venv
	@$(PY) -m shopper_profiles.profiles.sql --env $(ENV)

clean-lakehouse:
	rm -rf lakehouse
