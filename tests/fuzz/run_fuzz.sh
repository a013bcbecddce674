#!/bin/sh
# run_fuzz.sh - builds tests/fuzz/fuzz_proxy with clang (libFuzzer, ASan, UBSan) from the
# proxy's sources and runs it for a bounded time. Exits non-zero when it cannot be built or
# when the fuzzer finds anything (a crash, a sanitizer report, a leak, a hang).
#
# usage: run_fuzz.sh SRC_DIR PROTO_DIR WORK_DIR SECONDS
#   SRC_DIR   the repository root
#   PROTO_DIR the main build's generated protobuf-c sources (<build>/proto)
#   WORK_DIR  where the binary, the corpus and any crash artifact go
set -eu
SRC=$1
PROTO=$2
WORK=$3
SECS=${4:-60}
CC=${FUZZ_CC:-clang}

mkdir -p "$WORK/corpus"
PROXY="$SRC/proxy"
LIB="$SRC/lib"
PKGS="libczmq libzmq libprotobuf-c hiredis libuv yaml-0.1"
# Every proxy source but main.c and the unit tests: the list cannot fall behind proxy/.
PROXY_SRCS=$(find "$PROXY" -maxdepth 1 -name '*.c' ! -name main.c ! -name 'test_*' | sort)
echo "fuzz: building $WORK/fuzz_proxy with $CC"
# shellcheck disable=SC2046
$CC -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer \
    -I"$PROXY" -I"$LIB" -I"$PROTO" $(pkg-config --cflags $PKGS) \
    "$SRC/tests/fuzz/fuzz_proxy.c" \
    $PROXY_SRCS \
    "$LIB/tide_config.c" "$LIB/tide_curve.c" "$LIB/tide_hist.c" "$LIB/tide_log.c" "$LIB/tide_msg.c" \
    "$LIB/tide_redis.c" "$LIB/tide_window.c" "$PROTO/tide.pb-c.c" \
    $(pkg-config --libs $PKGS) -lhttp_parser -lpthread -lm \
    -o "$WORK/fuzz_proxy"

echo "fuzz: running for ${SECS}s"
cd "$WORK"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
./fuzz_proxy -max_total_time="$SECS" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -dict="$SRC/tests/fuzz/http.dict" -artifact_prefix="$WORK/" \
    "$WORK/corpus" "$SRC/tests/fuzz/seeds"
