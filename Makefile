# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench gpu-bench tiny-model clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The tests' CPU torch: a bare `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0" || $(PY) -m pip install --quiet torch
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/easel run

test: $(STAMP)
	$(VENV)/bin/ruff check bot engine storage tests bench
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check bot engine storage tests bench
	$(VENV)/bin/ruff format --check bot engine storage tests bench

format: $(STAMP)
	$(VENV)/bin/ruff format bot engine storage tests bench
	$(VENV)/bin/ruff check --fix bot engine storage tests bench

tiny-model: $(STAMP)
	$(PY) -m engine.tiny models/tiny-z-image

bench: $(STAMP)
	$(PY) bench/engine_overhead.py
	$(PY) bench/queue.py
	$(PY) bench/loop_lag.py
	$(PY) bench/bot_overhead.py
	$(PY) bench/memory_growth.py
	$(PY) bench/batch.py
	$(PY) bench/quantized_speed.py
	$(PY) bench/lora_switch.py
	$(PY) bench/wordlist.py
	$(PY) bench/chat_list_lag.py
	$(PY) bench/prompt_cache.py

# The gpu-marked tests, then the matrix; logs and the markdown table land in gpu-out/.
gpu-bench: $(STAMP)
	OUT=gpu-out PYTHON=$(PY) SESSION_SECONDS=100000 bash bench/gpu_session.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
