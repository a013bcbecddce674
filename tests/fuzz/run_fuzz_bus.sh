#!/bin/sh
# run_fuzz_bus.sh - builds the bus and config fuzzers (fuzz_msg, fuzz_config) with clang
# (libFuzzer, ASan, UBSan) and runs one target for a bounded time. Exits non-zero when they
# cannot be built or when the fuzzer finds anything (a crash, a sanitizer report, a leak, a
# single allocation over 64 MB, a hang).
#
# usage: run_fuzz_bus.sh SRC_DIR PROTO_DIR WORK_DIR SECONDS TARGET
#   SRC_DIR   the repository root
#   PROTO_DIR the main build's generated protobuf-c sources (<build>/proto)
#   WORK_DIR  where the binaries, corpora and any crash artifact go (shared by all targets:
#             the binaries are built once and rebuilt when a source is newer)
#   TARGET    a bus topic (stats, metrics.snapshot, exec.request ...) or "config"
set -eu
SRC=$1
PROTO=$2
WORK=$3
SECS=${4:-10}
TARGET=$5
CC=${FUZZ_CC:-clang}
FUZZ="$SRC/tests/fuzz"
LIB="$SRC/lib"
PKGS="libczmq libzmq libprotobuf-c yaml-0.1"

mkdir -p "$WORK/obj" "$WORK/corpus/$TARGET" "$WORK/seeds"

# ---- build (once for every target; a lock in case ctest runs two at a time) --------------
LIB_SRCS="$LIB/tide_msg.c $LIB/tide_log.c $LIB/tide_config.c $LIB/tide_hist.c \
$LIB/tide_window.c $SRC/metrics/aggregate.c $PROTO/tide.pb-c.c"
DEPS="$LIB_SRCS $LIB/*.h $SRC/metrics/aggregate.h $PROTO/tide.pb-c.h $FUZZ/fuzz_msg.c \
$FUZZ/fuzz_config.c $FUZZ/msg_seeds.c $0"
CFLAGS="-g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -fno-omit-frame-pointer \
-fsanitize=address,undefined -fno-sanitize-recover=undefined -I$LIB -I$SRC/metrics -I$PROTO \
$(pkg-config --cflags $PKGS)"
LIBS="$(pkg-config --libs $PKGS) -lpthread -lm"
stale() {
    for b in fuzz_msg fuzz_config msg_seeds; do
        [ -x "$WORK/$b" ] || return 0
    done
    # shellcheck disable=SC2086
    [ -n "$(find $DEPS -newer "$WORK/msg_seeds" 2>/dev/null | head -n 1)" ]
}
(
    flock 9
    if stale; then
        echo "fuzz: building fuzz_msg, fuzz_config and msg_seeds in $WORK with $CC"
        objs=""
        for s in $LIB_SRCS; do
            o="$WORK/obj/$(basename "$s" .c).o"
            # shellcheck disable=SC2086
            $CC $CFLAGS -fsanitize=fuzzer-no-link -c "$s" -o "$o"
            objs="$objs $o"
        done
        # shellcheck disable=SC2086
        {
            $CC $CFLAGS -fsanitize=fuzzer "$FUZZ/fuzz_msg.c" $objs $LIBS -o "$WORK/fuzz_msg"
            $CC $CFLAGS -fsanitize=fuzzer "$FUZZ/fuzz_config.c" $objs $LIBS -o "$WORK/fuzz_config"
            $CC $CFLAGS "$FUZZ/msg_seeds.c" $objs $LIBS -o "$WORK/msg_seeds"
        }
    fi
) 9>"$WORK/.lock"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# Every limit tide sets is far below these: a bigger allocation is a finding.
LIMITS="-timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=64 -print_final_stats=1"
cd "$WORK"
if [ "$TARGET" = config ]; then
    # Seeds: the committed examples and the default file; the keys of the schema as a
    # dictionary, taken from the default file so it cannot fall behind the table.
    mkdir -p "$WORK/seeds/config"
    cp "$FUZZ/seeds-config/"* "$SRC/deploy/tide.yml" "$WORK/seeds/config/"
    {
        cat "$FUZZ/yaml.dict"
        sed -n 's/^ *\([a-z_][a-z_0-9]*\):.*/"\1:"/p' "$SRC/deploy/tide.yml" | sort -u
    } >"$WORK/config.dict"
    echo "fuzz: config for ${SECS}s"
    # shellcheck disable=SC2086
    exec ./fuzz_config -max_total_time="$SECS" $LIMITS -max_len=8192 -dict="$WORK/config.dict" \
        -artifact_prefix="$WORK/config-" "$WORK/corpus/config" "$WORK/seeds/config"
fi
./msg_seeds "$WORK/seeds" >/dev/null
[ -d "$WORK/seeds/$TARGET" ] || { echo "fuzz: no seeds for topic '$TARGET'" >&2; exit 2; }
echo "fuzz: $TARGET for ${SECS}s"
export TIDE_FUZZ_TOPIC="$TARGET"
# shellcheck disable=SC2086
exec ./fuzz_msg -max_total_time="$SECS" $LIMITS -max_len=65536 \
    -artifact_prefix="$WORK/$TARGET-" "$WORK/corpus/$TARGET" "$WORK/seeds/$TARGET"
