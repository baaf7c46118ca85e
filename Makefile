# fcn-jax: `make demo` and `make test` are all a newcomer needs (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build of torch for Python 3.11; an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
# torchfcn's model classes are the community reference our PyTorch FCN is checked against. Its
# package imports `fcn` and `torchvision` (only for downloads), so it is installed without deps.
TORCHFCN := torchfcn==1.9.7
# torchvision's FCN-ResNet and ResNet model code is the reference the FCN-ResNets are proven
# against. 0.28.0 is torch 2.13.0's release; --no-deps keeps pip from replacing the CPU torch. Its
# C++ operators (detection only) may not load beside a CPU torch: fcn_jax.torch_reference's
# import_torchvision imports the models regardless.
TORCHVISION := torchvision==0.28.0
DEMO_DIR := demo_out
DEMO_WIDTH ?= 1.0
SAMPLE := fcn_jax/assets/voc_sample.jpg
# One thread per pytest worker (two workers on a 2-core CI machine).
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PYTEST_ARGS ?= -n 2

# The TFDS adapter needs tensorflow (~2.4 GB): its own venv and target keep `make test` light.
TFDS_VENV := .venv-tfds

# `make wheelhouse`: the wheels an offline accelerator host needs to install fcn-jax beside the
# cluster's jax and torch (README, Installation; tools/wheelhouse.py). PY_VERSION and PLATFORM are
# the host's Python and manylinux tag; JAX_VERSION, the host's jax release, keeps the resolved
# flax/optax/orbax within what it supports (default: the newest jax); RESOLVE_PYTHON, a Python of
# PY_VERSION for pip to resolve with, is needed only when the tool asks for it.
PY_VERSION ?= 3.12
PLATFORM ?= manylinux_2_28_x86_64
WHEELHOUSE ?= wheelhouse
JAX_VERSION ?=
RESOLVE_PYTHON ?=

# The Python 3.12 leg of `make test` (tools/test_py312.sh): the newest releases, fcn-jax installed
# offline from its own wheelhouse, every test that needs no torch. PY312 names the interpreter
# where it is not found by itself (python3.12 on PATH, pyenv's 3.12.x).
PY312 ?=
PY312_VENV := .venv-py312
PY312_WHEELHOUSE := build/wheelhouse-py312

.PHONY: venv install install-test demo demo-convert bench test test-main test-py312 test-tfds \
	wheelhouse lint fmt clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

install: $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[torch]'

install-test: $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[torch,test,export]'
	$(PIP) install --quiet --no-deps $(TORCHFCN) $(TORCHVISION)

# The main job end to end, no downloads: train the narrow FCN-8s on the built-in synthetic data
# (a few minutes on 2 CPU cores), score it, and predict the bundled VOC sample.
demo: install
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(PY) train.py --config configs/synthetic_fcn8s.py --workdir $(DEMO_DIR)/run
	$(PY) eval.py --config configs/synthetic_fcn8s.py --weights $(DEMO_DIR)/run --best \
		--out $(DEMO_DIR)/metrics.json
	$(PY) predict.py --weights $(DEMO_DIR)/run --best --input $(SAMPLE) --out $(DEMO_DIR)/predictions
	@echo "demo outputs: $(DEMO_DIR)/run (checkpoints, metrics.jsonl, samples/*.png, tensorboard/)," \
		"$(DEMO_DIR)/metrics.json, $(DEMO_DIR)/predictions/"

# Conversion with proof: a random-weight torchfcn FCN-8s -> Flax, the parity report on the VOC
# sample, then a prediction.
demo-convert: install
	rm -rf $(DEMO_DIR)/convert && mkdir -p $(DEMO_DIR)/convert
	$(PY) -m fcn_jax.torch_reference --arch fcn8s --width $(DEMO_WIDTH) \
		--out $(DEMO_DIR)/convert/random_fcn8s.pth
	$(PY) convert_torch_weights.py --src $(DEMO_DIR)/convert/random_fcn8s.pth --arch fcn8s \
		--out $(DEMO_DIR)/convert/fcn8s --check --image $(SAMPLE)
	$(PY) predict.py --weights $(DEMO_DIR)/convert/fcn8s --input $(SAMPLE) \
		--out $(DEMO_DIR)/convert/predictions --save-logits

# JAX against PyTorch on this machine, same weights and inputs: the quick plan (under 2 minutes on an idle
# 2-core CPU); `python bench.py --help` lists its cases, the full plan and --scaling.
bench: install
	$(PIP) install --quiet -e '.[torch,bench,export]'
	$(PY) bench.py --quick --out outputs/bench

# Two legs: the main suite (.venv, with torch), then the Python 3.12 leg (newest, no torch).
test: test-main
	@$(MAKE) --no-print-directory test-py312

# The long end-to-end runs (marker `long`) run once per `make test`, in the Python 3.12 leg; the
# faster tests cover their code paths on both stacks. `pytest` alone runs everything.
test-main: install-test
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS) -m "not long"

test-py312: $(PY)
	$(TEST_ENV) PY312='$(PY312)' PYTEST_ARGS='$(PYTEST_ARGS)' \
		bash tools/test_py312.sh $(PY) $(PY312_VENV) $(PY312_WHEELHOUSE)

wheelhouse: $(PY)
	$(PY) tools/wheelhouse.py --python-version $(PY_VERSION) --platform $(PLATFORM) \
		--out $(WHEELHOUSE) $(if $(JAX_VERSION),--jax-version $(JAX_VERSION)) \
		$(if $(RESOLVE_PYTHON),--interpreter $(RESOLVE_PYTHON))

test-tfds:
	test -x $(TFDS_VENV)/bin/python || $(PYTHON) -m venv $(TFDS_VENV)
	$(TFDS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TFDS_VENV)/bin/python -m pip install --quiet -e '.[tfds,test]'
	$(TEST_ENV) $(TFDS_VENV)/bin/python -m pytest tests_tfds -p no:cacheprovider

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: install-test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
