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
DEMO_DIR := demo_out
DEMO_WIDTH ?= 1.0
SAMPLE := fcn_jax/assets/voc_sample.jpg
# One thread per pytest worker (two workers on a 2-core CI machine).
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PYTEST_ARGS ?= -n 2

# The TFDS adapter needs tensorflow (~2.4 GB): its own venv and target keep `make test` light.
TFDS_VENV := .venv-tfds

.PHONY: venv install install-test demo demo-convert bench test test-tfds lint fmt clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

install: $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[torch]'

install-test: $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[torch,test]'
	$(PIP) install --quiet --no-deps $(TORCHFCN)

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
	$(PIP) install --quiet -e '.[torch,bench]'
	$(PY) bench.py --quick --out outputs/bench

test: install-test
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

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
