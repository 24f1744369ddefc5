# One command each (see README.md): `make run` executes every notebook, `make test` runs the tests,
# `make lab` opens JupyterLab. All of them create .venv and install the project first when needed.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run smoke test lab install clean-outputs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found %s" % sys.version.split()[0]'
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m helpers.runner

smoke: $(STAMP)
	$(PY) -m helpers.runner --smoke --output outputs/smoke

test: $(STAMP)
	$(PY) -m pytest

lab: $(STAMP)
	$(PY) -m jupyter lab --notebook-dir=notebooks

clean-outputs:
	rm -rf outputs
