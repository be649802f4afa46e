# Each target is a short call into a real script or command; see README.md.
SHELL := /usr/bin/env bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install test lint bench demo up down image clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,dev]'
	touch $@

lint: install
	$(BIN)/ruff check src lambda tests bench docs scripts
	$(BIN)/shellcheck infra/*.sh scripts/*.sh tests/infra/bin/*

test: install lint
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/compare_libraries.py
	$(BIN)/python bench/consumer_throughput.py --messages 50 --workers 1 2

up: install
	scripts/local-up.sh

down: install
	scripts/local-down.sh

demo: install
	scripts/demo.sh

image: install
	scripts/build-image.sh

clean:
	-scripts/local-down.sh
	rm -rf $(VENV) .run demo-output
