# Parole: `make install` once, then `make run` (the conversation) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROTOS := $(shell find protos -name '*.proto')
STAMP := parole/.generated

.PHONY: install system-deps venv lock proto models lint test bench reliability run demo clean

install: system-deps venv proto models ## everything a fresh machine needs (idempotent)

# chromium: the web client's tests drive Debian's browser with Playwright (whose own browser
# downloads are not used).
system-deps: ## espeak-ng (French voice, Piper phonemes), PortAudio headers (PyAudio), chromium (web client tests), when missing
	@missing=""; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	[ -f /usr/include/portaudio.h ] || missing="$$missing portaudio19-dev"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools

# llama.cpp is compiled from source; -DGGML_NATIVE=OFF builds portable code (the native
# build segfaults on some CPUs with AVX512/AMX). pip caches the built wheel.
venv: $(PY)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q -c constraints.txt -e ".[all]"

lock: | $(PY) ## after a green run on newer packages: record their versions in constraints.txt
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

proto: $(STAMP) ## gRPC stubs (with typed .pyi) from protos/ into parole/

$(STAMP): $(PROTOS) | $(PY)
	rm -rf parole
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. \
	  --mypy_out=. --mypy_grpc_out=. $(PROTOS)
	find parole -type d -exec touch {}/__init__.py \;
	touch $@

models: | $(PY) ## assemble the offline default models into the model cache
	$(PY) -m services.models assemble

lint: proto ## ruff, mypy, buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services client bench tests
	$(VENV)/bin/buf lint protos

test: proto ## the default test suite (real small models; ~15 min on 2 cores)
	$(PY) -m pytest

bench: proto ## benchmarks; JSON reports under reports/
	$(PY) -m bench

reliability: proto ## load, faults, bad input, soak, security: CI-sized run and docs/RELIABILITY.md (FULL=1: full load, soak, 10k fuzz calls per contract)
	$(PY) -m bench.reliability $(if $(FULL),--full,) $(if $(SOAK_TURNS),--soak-turns $(SOAK_TURNS),) $(if $(FUZZ_PER_CONTRACT),--fuzz-per-contract $(FUZZ_PER_CONTRACT),)

run: install ## the conversation: a live one with a microphone, else the demo on bundled audio
	$(PY) -m client.run

demo: install ## the demo conversation on the bundled spoken questions, even with a microphone
	$(PY) -m client.run --demo

clean:
	rm -rf parole .pytest_cache .mypy_cache .ruff_cache reports
