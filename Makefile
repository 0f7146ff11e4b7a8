# The README's two commands: `make demo` (set-up + main job on the embedded data) and `make test`.
# Both are idempotent on a fresh machine: .venv is created once and re-synced when pyproject.toml changes.
PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Exact versions for this machine (installed from its local wheel store); pyproject.toml keeps ranges.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEBIAN_PACKAGES := dataset-fashion-mnist slurmctld slurmd slurm-client munge

.PHONY: demo preview test test-long gpu-check venv system-packages lint bench clean-sweeps

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[dev,wandb]" $(TORCH_PINS)  # wandb: the tests exercise runtime.logger=wandb offline
	touch $@

venv: $(VENV)/.installed

# Fashion-MNIST (the one real labelled image set available offline) and a local SLURM for the
# cluster tests. Needs root; without it, install them yourself or set XSAMPLE_FASHION_MNIST_ROOT.
system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: missing Debian packages:$$missing (run as root to install them)"; fi; \
	fi

# Table 1 in miniature with the sanity runs its known-answer checks compare (configs/table/1.yaml
# extra_sweeps: supervision detached from the images); the last lines say whether the checks pass.
demo: venv system-packages
	HF_HUB_OFFLINE=1 $(PY) experiments/preview.py --tables 1 --out paper_figures/tiny

# Every table in miniature into the committed preview (paper_figures/preview/tiny), each table timed.
preview: venv system-packages
	HF_HUB_OFFLINE=1 $(PY) experiments/preview.py

test: venv system-packages
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not rehearsal and not long" --durations=25

# Every table under scale=rehearsal on miniature paper datasets, locally and on the local SLURM (~30 min).
test-long: venv system-packages
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "rehearsal or long" --durations=25

# On a machine with one GPU (a few minutes, offline, fixture data): does the paper path's input and training run
# there, and how fast; one JSON line (experiments/gpu_check.py says what it holds). make test runs its --small mode.
gpu-check: venv
	HF_HUB_OFFLINE=1 $(PY) experiments/gpu_check.py

lint: venv
	$(PY) -m ruff check xsample analysis experiments tests

bench: venv
	$(PY) experiments/bench_losses.py
