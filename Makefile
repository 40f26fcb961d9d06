# The README's two commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench screenshots clean

# The editable install builds the JupyterLab extension (Node) and copies it into the venv;
# rebuild it when its sources change and link the venv to the build (as
# `jupyter labextension develop` would), so `jlpm build` in extensions/ needs no reinstall.
LABEXT := $(VENV)/share/jupyter/labextensions/nbmlops-lab
$(STAMP): pyproject.toml extensions/package.json extensions/yarn.lock \
  $(wildcard extensions/src/*.ts extensions/src/*/*.ts extensions/style/* extensions/schema/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	cd extensions && PATH="$(abspath $(BIN)):$$PATH" jlpm install \
	  && PATH="$(abspath $(BIN)):$$PATH" jlpm build:prod
	rm -rf $(LABEXT) && ln -s $(CURDIR)/nbmlops/labextension $(LABEXT)
	touch $(STAMP)

# Run the example notebooks as tracked pipelines on the embedded default store
# (./mlflow.db and ./mlruns, no server), then show what MLflow recorded.
demo: $(STAMP)
	$(BIN)/nbmlops steps notebooks/breast_cancer.ipynb
	$(BIN)/nbmlops run notebooks/breast_cancer.ipynb -p n_estimators=200
	$(BIN)/nbmlops run notebooks/breast_cancer.ipynb -p n_estimators=200   # every step cached
	$(BIN)/nbmlops sweep notebooks/breast_cancer.ipynb -g n_estimators=50,100 -g max_depth=4,8 --metric f1
	$(BIN)/nbmlops run notebooks/diabetes.ipynb
	$(BIN)/nbmlops show last --experiment breast_cancer
	test -f $(HOME)/.nbmlops/keys/signing.key || $(BIN)/nbmlops keys init   # signs promoted versions
	$(BIN)/nbmlops promote --experiment breast_cancer --metric f1 --gate "f1>=0.9"
	$(BIN)/nbmlops build breast_cancer
	$(BIN)/nbmlops serve breast_cancer --check
	$(BIN)/nbmlops ci --junit .nbmlops/ci/junit.xml --summary .nbmlops/ci/summary.md
	$(BIN)/python -m nbmlops.monitor.demo .nbmlops/demo
	$(BIN)/nbmlops monitor drift breast_cancer --current .nbmlops/demo/unshifted.csv
	$(BIN)/nbmlops monitor drift breast_cancer --current .nbmlops/demo/shifted.csv \
	  --report .nbmlops/demo/drift.html; test $$? -eq 1   # drift found: exit 1
	@echo "drift report: .nbmlops/demo/drift.html"

test: $(STAMP)
	.ci/system-deps
	cd extensions && PATH="$(abspath $(BIN)):$$PATH" jlpm test --silent
	$(BIN)/python -m pytest

# The browser test saves its screenshots of the panel and the widget into docs/img/.
screenshots: $(STAMP)
	NBMLOPS_SCREENSHOT_DIR=docs/img $(BIN)/python -m pytest tests/test_browser.py -q

# ruff, mypy --strict (pyproject's [tool.mypy]) and the layer contract ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check nbmlops tests bench
	$(BIN)/ruff format --check nbmlops tests bench
	$(BIN)/mypy nbmlops
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/bench_run.py
	$(BIN)/python bench/bench_cache.py
	$(BIN)/python bench/bench_serve.py
	$(BIN)/python bench/bench_drift.py

clean:
	rm -rf $(VENV) .nbmlops mlflow.db mlflow.db.lock mlruns mlartifacts nbmlops-runs
	rm -rf nbmlops/labextension extensions/lib extensions/tsconfig.tsbuildinfo
