# The README's two commands: `make lab` and `make test`. Both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Every Python file of the project: the package, the Ansible plugins and modules, the scripts
# roles install, tests and benchmarks.
PY_PATHS := src filter_plugins library module_utils doc_fragments tests bench scripts $(wildcard roles/*/files) molecule/coordinator_ha/files molecule/vpn/files \
	$(wildcard roles/*/filter_plugins)

.PHONY: lab lab-job lab-suspend lab-down test lint unit molecule testhosts venv clean bench test-deps \
	collection collection-sanity

## Bring up the lab grid (containers on this machine) and run playbooks/site.yml against it.
lab: venv testhosts
	ansible-playbook playbooks/lab.yml

## Run the seed's job in the lab (after `make lab`): submit it as a researcher on lab-submit,
## follow it from the coordinator's lease to a VM on a lab desktop and to its output, then log
## the desktop's owner on and see the VM leave the pool; show an idle job as demand.
lab-job: venv
	ansible-playbook playbooks/lab_job.yml
	$(BIN)/python scripts/lab_job.py

## Suspend instead of shut down in the lab (after `make lab`): turn grid_policy.suspend_minutes
## on for the lab desktops, run a job in a VM, log the owner on (the VM is saved) and off (it
## resumes), see the job complete having started once; then turn the setting off again.
lab-suspend: venv
	ansible-playbook playbooks/lab_job.yml
	$(BIN)/python scripts/lab_job.py --suspend

## Remove the lab containers (the base image and networks stay, for a fast next `make lab`).
lab-down:
	podman ps -a --filter label=desktop-grid.lab=true -q | xargs -r podman rm -f

## Everything CI runs: linters and type checks, then pytest and the molecule scenarios side by
## side (scripts/test-streams.sh; TEST_STREAMS=serial runs them one after the other).
test: lint test-deps testhosts
	bash scripts/test-streams.sh

lint: venv
	ruff check $(PY_PATHS)
	ruff format --check $(PY_PATHS)
	mypy
	yamllint --strict .
	ansible-lint --strict
	antsibull-changelog lint

# testhosts first: the image and lab tests need its base images and apt repositories (in CI a
# missing one fails them, it never skips them).
unit: venv test-deps testhosts
	pytest

# The agent's integration tests need qemu, minisign, busybox and ISO readers (Debian packages).
test-deps:
	bash scripts/test-deps.sh

# Every scenario in name order; a live one (with molecule/<s>/skip-reason) prints its skip.
molecule: venv testhosts
	bash scripts/molecule-scenarios.sh

testhosts:
	bash scripts/testhosts.sh

## Build the Ansible collection desktopgrid.grid into dist/ (scripts/build_collection.py).
collection: venv
	$(BIN)/python scripts/build_collection.py --output-dir dist

## Build it in a temporary folder and run the ansible-test sanity tests that work offline. Not
## under .cache: ansible-test would skip every file there, as the checkout's .gitignore does.
collection-sanity: venv
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  $(BIN)/python scripts/build_collection.py --output-dir "$$tmp/dist" --staging "$$tmp" --sanity

bench: venv
	$(BIN)/python bench/grid_model.py

venv: $(VENV)/.installed

# scripts/venv.sh makes $(VENV) from $(PYTHON) (on Debian it needs python3-venv: installed when
# root, named otherwise) and removes a half-made one first: no bin/pip or no .installed marker.
# A venv without pip is made again even when its marker is newer than the requirements.
ifeq ($(wildcard $(BIN)/pip),)
.PHONY: $(VENV)/.installed
endif
$(VENV)/.installed: requirements.txt pyproject.toml
	PYTHON='$(PYTHON)' bash scripts/venv.sh $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
