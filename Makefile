# Makefile - a thin wrapper over CMake (like neovim's): `make`, `make run`, `make test`.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
SANITIZE ?= OFF
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all deps build run test test-unit test-integration test-tsan test-chaos clean distclean \
    format

# The docker driver's targets (docker-image, docker-clean, test-e2e) and RUN_SCRIPT, which
# `make run DRIVER=docker` switches to scripts/run-tide-docker.
include mk/docker.mk

all: build

deps:
	scripts/setup-deps

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DTIDE_SANITIZE=$(SANITIZE) $(CMAKE_FLAGS)

build: $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Runs tide in the foreground under supervisord (Ctrl-C stops everything).
run: deps build
	$(RUN_SCRIPT)

# The chaos suite's table (tests/chaos) and the rogue clients' (tests/integration/
# test_rogue.py), printed after ctest whether it passed or not.
CHAOS_TABLE = build-test/tests/chaos/chaos-table.txt
ROGUE_TABLE = build-test/tests/integration/rogue-table.txt

# The whole suite: unit, integration, chaos and e2e (real Docker) tests, built with ASan+UBSan.
test: deps
	$(MAKE) build BUILD_DIR=build-test SANITIZE=ON
	rm -f $(CHAOS_TABLE) $(ROGUE_TABLE)
	cd build-test && ctest --output-on-failure --timeout 600 $(CTEST_ARGS); \
	    rc=$$?; for t in $(ROGUE_TABLE) $(CHAOS_TABLE); do [ ! -f ../$$t ] || cat ../$$t; done; \
	    exit $$rc

test-unit: deps
	$(MAKE) build BUILD_DIR=build-test SANITIZE=ON
	cd build-test && ctest --output-on-failure -L unit $(CTEST_ARGS)

test-integration: deps
	$(MAKE) build BUILD_DIR=build-test SANITIZE=ON
	cd build-test && ctest --output-on-failure -L integration $(CTEST_ARGS)

# Faults injected one at a time into a supervised stack under load (about 3 minutes).
test-chaos: deps
	$(MAKE) build BUILD_DIR=build-test SANITIZE=ON
	rm -f $(CHAOS_TABLE)
	cd build-test && ctest --output-on-failure -L chaos $(CTEST_ARGS); \
	    rc=$$?; [ ! -f ../$(CHAOS_TABLE) ] || cat ../$(CHAOS_TABLE); exit $$rc

# The proxy under ThreadSanitizer. build-test is only (re)configured, so ctest knows the label's
# tests: they build their own TSan tree (build-test/tsan) and run nothing of the ASan one.
test-tsan: deps
	cmake -S . -B build-test -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DTIDE_SANITIZE=ON $(CMAKE_FLAGS)
	cd build-test && ctest --output-on-failure -L tsan $(CTEST_ARGS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD_DIR) build-test build-app-static

distclean: clean
	rm -rf run
