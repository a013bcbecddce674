# mk/docker.mk - the docker driver's targets; included by the root Makefile
# (`include mk/docker.mk`). `make run DRIVER=docker` runs tide on Docker.
DRIVER ?= process
# The script `make run` execs: scripts/run-tide (process driver) or scripts/run-tide-docker.
RUN_SCRIPT = scripts/run-tide$(if $(filter docker,$(DRIVER)),-docker,)
# The service's name in deploy/tide-docker.yml: its containers carry tide.service=$(SERVICE).
SERVICE ?= web

.PHONY: docker-image docker-clean test-e2e

# The sample app, static, in a FROM scratch image (tide-sample-app:latest).
docker-image:
	scripts/build-app-image

# Removes the containers `make run DRIVER=docker` left running (they outlive it on purpose), and
# stops the host's flight recorder it left (playbooks/list.yml keeps one while profiling is on).
docker-clean:
	@ids=$$(docker ps -aq --filter label=tide.service=$(SERVICE)); \
	if [ -n "$$ids" ]; then docker rm -f $$ids; else echo "no containers of $(SERVICE)"; fi
	@if [ -f run/docker/executor/recorder/tide-recorder-keep.sh ]; then \
	    echo "flight recorder: $$(sh run/docker/executor/recorder/tide-recorder-keep.sh off run/docker/executor/recorder)"; fi

# The e2e suite alone (real Docker and Ansible; it is also part of `make test`).
test-e2e: deps
	$(MAKE) build BUILD_DIR=build-test SANITIZE=ON
	cd build-test && ctest --output-on-failure -L e2e $(CTEST_ARGS)
