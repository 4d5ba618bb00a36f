# make demo: set up (first time) and run the demo grid, then write its figures.  make test: set up and test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Corpora and token shards are built once and shared by every run, test and demo.
export MIDSWEEP_CACHE ?= $(CURDIR)/.cache/midsweep
DEMO_DIR ?= runs/tiny

.PHONY: install demo lint test test-fast benchmarks clean

install: $(VENV)/.installed

# Where no GPU is present, the CPU build of torch goes in first, so that the torch range in
# pyproject.toml is already met and pip does not fetch CUDA packages.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q "torch==2.13.0"; fi
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# The tiny profile of the plasticity_window study: 4 introduction times x 4 weights, the no-introduction baseline
# and the continued-pretraining control, all post-trained on the target; then the figures and the report.
# One thread: a model this small gains little from a second one, and on a busy machine threads that wait for
# each other made it 7x slower (measured on the 2-core CI machine).
demo: install
	OMP_NUM_THREADS=1 $(BIN)/midsweep-train -m sweep=plasticity_window train.out_dir=$(DEMO_DIR)
	$(BIN)/midsweep-analyze $(DEMO_DIR)

# The SLURM tests run where root and apt are available (they start a real local cluster); elsewhere
# pytest skips them and says why in its summary.
lint: install
	$(BIN)/ruff check .

test: lint
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "NOTE: not root or no apt-get: the SLURM tests (marker 'slurm') will be skipped"; fi
	$(BIN)/python -m pytest

# In-process tests only: those marked slow (they start a process or train long; tests/conftest.py) or slurm are
# left out, and a test that starts a process without the slow marker fails.
test-fast: lint
	$(BIN)/python -m pytest -m "not slow and not slurm"

benchmarks: install
	$(BIN)/python benchmarks/prepare_speed.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/analysis_speed.py
	$(BIN)/python benchmarks/submit_grid.py
	$(BIN)/python benchmarks/sharing.py
	$(BIN)/python benchmarks/fsdp_memory.py

clean:
	rm -rf $(VENV) .cache runs
