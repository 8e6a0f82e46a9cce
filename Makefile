# One virtual environment, made from requirements.txt; every target below uses it.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: install run test bench load worker clean

# Re-installs only when requirements.txt changed since the last install.
$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

install: $(VENV)/.installed

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap_demo
	$(PY) -m callwaiting.server -b $(HOST) -p $(PORT) callwaiting.asgi:application

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/run.py
	$(PY) bench/topology.py
	$(PY) bench/phrase_cache.py
	$(PY) bench/xtts_vocoder.py
	$(PY) bench/xtts_batch.py
	$(PY) bench/formats.py

# 20 streams for 1 minute against a topology it starts (DATABASE_URL, REDIS_URL); LOAD_ARGS for more, e.g.
# make load LOAD_ARGS="--streams 100 --minutes 5" (see README, Performance).
load: install
	$(PY) bench/load.py $(LOAD_ARGS)

worker: install
	$(PY) manage.py tts_worker

clean:
	rm -rf $(VENV) var .pytest_cache
