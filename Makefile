# onekvm.fleet — entry points. `make demo` and `make test` are the two README commands;
# both install what they need (Debian packages, Python venv, VM image) on first use.
SHELL := /bin/bash
# (a failed set-up stops here with its own one-line message)
ENV = env_file=$$(scripts/setup.sh) && source "$$env_file"
# the nox sessions (lint, sanity, units, docs ...) need only a Python >= 3.12: no root, no apt
NOX_ENV = env_file=$$(scripts/setup.sh nox) && source "$$env_file"

.PHONY: setup demo test unit sanity lint role-docs docs changelog fleet ee vm-test molecule image vm-start vm-stop bench

setup:            ## install Debian packages + venv + collection path (idempotent)
	@scripts/setup.sh >/dev/null

demo:             ## boot the simulated OneKVM box and run the collection against it
	@$(ENV) && scripts/demo.sh

test:             ## everything: lint, sanity, units, simulator tests, VM suite, molecule
	@$(ENV) && scripts/test-all.sh

unit:             ## fast inner loop: ansible-test units + simulator and script self-tests (no VM)
	@$(NOX_ENV) && scripts/test-all.sh units tooling testbed

sanity:           ## ansible-test sanity (--venv)
	@$(NOX_ENV) && scripts/test-all.sh sanity

lint:             ## ansible-lint, production profile, offline; the role's generated docs are current
	@$(NOX_ENV) && scripts/test-all.sh lint

role-docs:        ## write the role's README.md and defaults/main.yml from meta/argument_specs.yml (aar-doc)
	@$(NOX_ENV) && nox -f noxfile.py --envdir "$${ONEKVM_NOX_ENVDIR:-.nox}" --reuse-existing-virtualenvs -s role-docs

docs:             ## antsibull-docs lint-collection-docs
	@$(NOX_ENV) && scripts/test-all.sh docs

changelog:        ## antsibull-changelog lint
	@$(NOX_ENV) && scripts/test-all.sh changelog

vm-test:          ## the tests that need the simulated box (boots it once)
	@$(ENV) && scripts/test-all.sh vm

fleet:            ## playbooks, health report (headless Chromium), EE context, on podman boxes
	@$(ENV) && scripts/test-all.sh fleet

ee:               ## the execution environment: build it (Debian packages), run provision/health in it (ansible-navigator, ansible-runner worker) on SSH boxes; not in `make test`
	@$(ENV) && scripts/test-all.sh ee

molecule:
	@$(ENV) && scripts/test-all.sh molecule

image:            ## build (or reuse) the simulated box image
	@$(ENV) && tests/testbed/build-image.sh

vm-start:
	@$(ENV) && python3 -m tests.testbed.vm start

vm-stop:
	@$(ENV) && python3 -m tests.testbed.vm stop

bench:            ## benchmarks (need the simulated box); print the figures; BENCH=benchmarks/NAME.py for one
	@$(ENV) && scripts/bench.sh $(BENCH)
