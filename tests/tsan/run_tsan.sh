#!/bin/sh
# run_tsan.sh - the steps of the "tsan" ctest label. TSan cannot be combined with ASan, which
# the main test build uses, so the proxy is built again in a tree of its own with
# -DTIDE_SANITIZE=thread and its tests run against those binaries.
#
# usage: run_tsan.sh build SRC_DIR TSAN_DIR CC
#          configures and builds tide-proxy, its unit tests and tide-sample-app into TSAN_DIR
#        run_tsan.sh unit TSAN_DIR
#          the TSan build's unit tests (a report makes the program exit 66: the test fails)
#        run_tsan.sh pytest TSAN_DIR LOG_DIR TEST_FILE...
#          pytest with TIDE_BIN_DIR=TSAN_DIR/bin; every instrumented process writes its reports
#          to LOG_DIR/tsan.<pid> (the harness fails the test that started it); afterwards
#          LOG_DIR must be empty
# Exits non-zero when the build fails, a test fails, or TSan reported anything.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
MODE=$1
shift

# halt_on_error: the first race ends the process (exit 66), so the test that caused it fails.
# second_deadlock_stack: a lock-order report shows where both mutexes were taken.
# history_size=4: 512K accesses per thread remembered, so the earlier access of a race keeps
# its stack under load. Anything already in TSAN_OPTIONS comes last and wins.
TSAN_BASE="halt_on_error=1 exitcode=66 second_deadlock_stack=1 history_size=4"
TSAN_BASE="$TSAN_BASE suppressions=$HERE/tsan.supp"

case "$MODE" in
build)
    SRC=$1 DIR=$2 CC=$3
    cmake -S "$SRC" -B "$DIR" -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DTIDE_SANITIZE=thread \
        -DTIDE_SUBDIRS="examples/app;proxy" >"$DIR.configure.log" 2>&1 ||
        { cat "$DIR.configure.log"; exit 1; }
    cmake --build "$DIR" -j "${TIDE_TSAN_JOBS:-2}"
    ;;
unit)
    DIR=$1
    export TSAN_OPTIONS="$TSAN_BASE ${TSAN_OPTIONS:-}"
    ctest --test-dir "$DIR" -L unit --output-on-failure
    ;;
pytest)
    DIR=$1 LOGS=$2
    shift 2
    rm -rf "$LOGS"
    mkdir -p "$LOGS"
    export TSAN_OPTIONS="$TSAN_BASE ${TSAN_OPTIONS:-} log_path=$LOGS/tsan"
    export TIDE_BIN_DIR="$DIR/bin" PYTHONDONTWRITEBYTECODE=1
    rc=0
    /usr/bin/python3 -m pytest -x -q -p no:cacheprovider "$@" || rc=$?
    # Reports of processes no harness looked at (or of a test that failed first) end it here.
    for f in "$LOGS"/tsan.*; do
        [ -e "$f" ] || continue
        echo "tsan: report in $f:"
        cat "$f"
        rc=1
    done
    exit $rc
    ;;
*)
    echo "usage: run_tsan.sh build|unit|pytest ..." >&2
    exit 2
    ;;
esac
