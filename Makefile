# Two commands on a fresh machine: `make serve` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
PORT   ?= 8000

.PHONY: install test serve bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,serve,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

serve: $(STAMP)
	$(VENV)/bin/gunicorn -c gunicorn.conf.py --bind 0.0.0.0:$(PORT)

# Benchmarks print measured figures (tables + a JSON line); run them on a quiet machine.
bench: $(STAMP)
	$(PY) bench/decode.py --weights weights/shakespeare
	$(PY) bench/load.py
	$(PY) bench/threads.py
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache runs
