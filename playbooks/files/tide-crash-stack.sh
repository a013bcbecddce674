#!/bin/sh
# tide-crash-stack.sh - the stacks of a crashed instance's threads at the moment it died, read
# from the core tide-crash-evidence.sh kept, for the crash profile's crash.txt.
#
#   tide-crash-stack.sh CRASH_DIR EXE OUT
#
# CRASH_DIR is STATE_DIR/crashes/NAME-PID (core, how); EXE the instance's program ("-": the path
# in CRASH_DIR/exe, the docker driver's copy of a container's program). Writes OUT:
# the thread that took the signal first, then every thread (gdb; eu-stack when gdb is missing),
# and prints one line for meta.txt's crash_note. The core is removed once read: it holds the
# process's memory, and the stack is what the profile keeps. Without a core it prints why
# there is none (tide-crash-evidence.sh's note) and writes no OUT. Exits 0 either way: a
# missing stack does not cost the profile its samples.
set -u
cdir=$1 exe=$2 out=$3
core=$cdir/core
if [ ! -f "$core" ]; then
    if [ -f "$cdir/how" ]; then
        cat "$cdir/how"
    else
        echo "no core: the instance's exit was not seen by the list that found it"
    fi
    exit 0
fi
case "$exe" in
-) exe=$(cat "$cdir/exe" 2>/dev/null || echo "the program (CRASH_DIR/exe missing)") ;;
*/*) ;;
*) exe=$(command -v "$exe" || echo "$exe") ;;
esac
tmp=$out.tmp
if command -v gdb >/dev/null 2>&1; then
    # -nx: no user gdbinit; the first bt is the thread that took the signal.
    timeout 60 gdb -batch -nx -ex 'set pagination off' -ex 'set print frame-arguments none' \
        -ex 'echo == the thread that took the signal\n' -ex 'bt' \
        -ex 'echo \n== every thread\n' -ex 'thread apply all bt' \
        "$exe" "$core" 2>/dev/null |
        grep -v -e '^\[New LWP' -e "^warning: Unexpected size of section" \
            -e '^\[Thread debugging' -e '^Using host libthread_db' >"$tmp"
    tool=gdb
elif command -v eu-stack >/dev/null 2>&1; then
    timeout 60 eu-stack --core "$core" -e "$exe" >"$tmp" 2>/dev/null
    tool=eu-stack
else
    rm -f "$core"
    echo "no stack: neither gdb nor eu-stack is installed (scripts/setup-deps installs both)"
    exit 0
fi
rm -f "$core"
if grep -q '^#0 ' "$tmp" 2>/dev/null; then
    mv "$tmp" "$out"
    echo "$(cat "$cdir/how" 2>/dev/null || echo "core kept"); stacks read from it with $tool"
else
    rm -f "$tmp"
    echo "core kept, but $tool read no stack from it (is $exe the program that crashed?)"
fi
