# onekvm.fleet — entry points. `make demo` and `make test` are the two README commands;
# both install what they need (Debian packages, Python venv, VM image) on first use.
SHELL := /bin/bash
ENV = source "$$(scripts/setup.sh)"

.PHONY: setup demo test unit sanity lint fleet vm-test molecule image vm-start vm-stop bench

setup:            ## install Debian packages + venv + collection path (idempotent)
	@scripts/setup.sh >/dev/null

demo:             ## boot the simulated OneKVM box and run the collection against it
	@$(ENV) && scripts/demo.sh

test:             ## everything: lint, sanity, units, simulator tests, VM suite, molecule
	@$(ENV) && scripts/test-all.sh

unit:             ## fast inner loop: ansible-test units + simulator self-tests (no VM)
	@$(ENV) && scripts/test-all.sh units testbed

sanity:
	@$(ENV) && scripts/test-all.sh sanity

lint:
	@$(ENV) && scripts/test-all.sh lint

vm-test:          ## the tests that need the simulated box (boots it once)
	@$(ENV) && scripts/test-all.sh vm

fleet:            ## playbooks, health report (headless Chromium), EE context, on podman boxes
	@$(ENV) && scripts/test-all.sh fleet

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
