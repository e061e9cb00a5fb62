# coolchic: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch for this environment (a bare `torch` can pull a multi-GB CUDA
# build). Users with a GPU can run: make install TORCH_SPEC="torch==2.13.0" with their index.
TORCH_SPEC ?= torch==2.13.0
PRESET ?= quick
JOBS ?= 2
BACKEND ?= local
KODAK_DIR ?= $(if $(wildcard ../shared/data/kodak),../shared/data/kodak,)
LMBDA ?= 0.001

.PHONY: help install test lint demo bench reproduce-paper tools clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(VENV)/.installed: pyproject.toml setup.py coolchic/model/kernels.cpp coolchic/decoder/decoder_kernels.cpp
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,ray,codecs]"
	touch $@

install: $(VENV)/.installed  ## create .venv: coolchic, CPU torch, dev tools, ray, imagecodecs

lint: install  ## ruff
	$(VENV)/bin/ruff check coolchic tests experiments tools benchmarks

test: install lint  ## lint, then the whole test suite (a few minutes on 2 cores)
	$(VENV)/bin/pytest -q

demo: install  ## encode then decode the sample crop (about a minute on 2 cores)
	$(VENV)/bin/coolchic encode samples/kodim23_crop256.png --lmbda $(LMBDA) --preset fast -o /tmp/coolchic-demo.bin
	$(VENV)/bin/coolchic decode /tmp/coolchic-demo.bin -o /tmp/coolchic-demo.png
	$(VENV)/bin/coolchic info /tmp/coolchic-demo.bin

bench: install  ## speed benchmark (writes results/speed.tsv)
	$(PY) benchmarks/speed.py

reproduce-paper: install  ## Kodak RD protocol (PRESET=quick|paper|paper-grade JOBS=N BACKEND=local|ray KODAK_DIR=...)
	$(VENV)/bin/coolchic reproduce-paper --preset $(PRESET) --jobs $(JOBS) --backend $(BACKEND) \
		$(if $(KODAK_DIR),--kodak-dir $(KODAK_DIR))

tools:  ## best effort: ffmpeg with x265 for the HEVC baseline (Debian/Ubuntu, as root)
	@command -v ffmpeg >/dev/null && echo "ffmpeg: present" || \
		{ command -v apt-get >/dev/null && apt-get update -q && apt-get install -y -q --no-install-recommends ffmpeg; } || \
		echo "install ffmpeg with libx265 by hand for the HEVC baseline"
	@command -v vvencapp >/dev/null || echo "note: the VVC baseline needs vvencapp/vvdecapp (not packaged): build fraunhoferhhi/vvenc and vvdec"

clean:  ## remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .hypothesis build dist
