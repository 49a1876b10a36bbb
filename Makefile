# Makefile - build, test, lint and run jwt-signer (a thin wrapper over CMake).
#   make build | test | run | lint | clean | distclean
#   make test SANITIZE=address,undefined   (separate build dir: build-san)
#   make test SANITIZE=thread              (build-tsan; unit, fuzz and the tests labelled tsan)
SHELL := /bin/bash
# Quiet nested makes (the CMake-generated Makefiles run under this one).
MAKEFLAGS += --no-print-directory
.DEFAULT_GOAL := build

SANITIZE ?=
TEST_SELECT :=
ifeq ($(strip $(SANITIZE)),)
BUILD_DIR ?= build
TEST_ENV :=
else ifeq ($(strip $(SANITIZE)),thread)
# ThreadSanitizer: tests/tsan.supp lists the uninstrumented system libraries
# whose accesses are ignored, and why. TSan runs 5-15x slower: the harness's
# timeouts are scaled by 5, and only the unit and fuzz tests and the
# integration tests labelled tsan run (tests/CMakeLists.txt), two at a time,
# so .ci/run stays within its budget.
BUILD_DIR ?= build-tsan
TEST_ENV := TSAN_OPTIONS='halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp' \
	JS_TIMEOUT_SCALE=5
TEST_SELECT := -L '^(unit|fuzz|tsan)$$' -j 2
else
# AddressSanitizer + UBSan: every test, one at a time (two at a time saved
# 4 min but made integration.test_shutdown miss one answer in 100000 once:
# see tests/CMakeLists.txt). The harness's timeouts are scaled by 3 under
# ASAN_OPTIONS.
BUILD_DIR ?= build-san
TEST_ENV := ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp
endif
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?=

# Our C code, for clang-format (check-banned.sh has the same list).
C_DIRS := $(wildcard lib signer client policy audit tests)

# make run: JS_DEV_LISTEN, JS_DEV_HTTP, JS_DEV_CONFIG as scripts/dev-setup.sh
# says (it writes var/dev once and prints the sign and admin lines to try).
JS_DEV_CONFIG ?= signer.yaml

.PHONY: all deps build test lint lint-fast analyze run bench install deb deb-check clean distclean

all: build

# DEPS_ARGS=--build: only the packages build and run need (docker-compose.yml).
DEPS_ARGS ?=
deps:
	@scripts/deps.sh $(DEPS_ARGS)

build: deps
	@echo "cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSANITIZE=$(SANITIZE)"
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSANITIZE=$(SANITIZE) \
		--log-level=WARNING >/dev/null
	cmake --build $(BUILD_DIR) -j $(JOBS)

# A sanitizer run repeats only the fast source checks: the static analyzer
# looks at the same sources whatever the build, and .ci/run's plain
# `make test` has run it already.
test: $(if $(strip $(SANITIZE)),lint-fast,lint) build
	$(TEST_ENV) ctest --test-dir $(BUILD_DIR) --output-on-failure $(TEST_SELECT) $(CTEST_ARGS)

lint: lint-fast analyze

lint-fast: deps
	@scripts/check-banned.sh
	@echo "clang-format --dry-run -Werror <*.c *.h in $(C_DIRS)>"
	@$(if $(C_DIRS),find $(C_DIRS) -type f \( -name '*.c' -o -name '*.h' \) -print0 | \
		xargs -0 -r clang-format --dry-run -Werror,true)

# The Clang static analyzer (clang-tidy clang-analyzer-*) over the product
# sources; needs a configured $(BUILD_DIR) (scripts/analyze.sh makes it).
analyze: deps
	@JOBS=$(JOBS) scripts/analyze.sh $(BUILD_DIR)

run: build
	@JS_DEV_CONFIG=$(JS_DEV_CONFIG) scripts/dev-setup.sh $(BUILD_DIR)
	exec env SOFTHSM2_CONF=var/dev/softhsm2.conf $(BUILD_DIR)/jwt-signerd --config var/dev/$(JS_DEV_CONFIG)

# Throughput: raw HSM vs end to end with the durable audit log vs fsync off,
# measured in one run (tests/bench/bench.py). Not part of `make test`.
bench: build
	JS_SIGNERD=$(CURDIR)/$(BUILD_DIR)/jwt-signerd JS_SIGN=$(CURDIR)/$(BUILD_DIR)/jwt-sign \
	JS_CLIENT_TEST=$(CURDIR)/$(BUILD_DIR)/tests/client_load \
	JS_BENCH_HSM=$(CURDIR)/$(BUILD_DIR)/tests/bench_hsm JS_SOURCE_DIR=$(CURDIR) \
	JS_CLIENT_PACED=$(CURDIR)/$(BUILD_DIR)/tests/client_paced \
	GRPC_DNS_RESOLVER=native /usr/bin/python3 tests/bench/bench.py $(BENCH_ARGS)

# make install [PREFIX=/usr/local] [DESTDIR=...]: cmake --install (README
# "Installing"). The unit and configuration name the paths under PREFIX.
PREFIX ?= /usr/local
install: build
	DESTDIR=$(DESTDIR) cmake --install $(BUILD_DIR) --prefix $(PREFIX)

# make deb: the .deb packages (debian/, dpkg-buildpackage) built from the
# tracked files in build-deb/src, linted with lintian. make deb-check: those
# packages installed with apt on a fresh Debian 12 (debootstrap) and started
# under its systemd (tests/deploy/sandbox.sh --deb; needs the network).
deb: deps
	@scripts/build-deb.sh build-deb

deb-check: deb
	tests/deploy/sandbox.sh --deb build-deb .

clean:
	rm -rf $(sort build build-san build-tsan build-deb $(BUILD_DIR))

distclean: clean
	rm -rf var/dev tests/node/node_modules
	@rmdir var 2>/dev/null || true
