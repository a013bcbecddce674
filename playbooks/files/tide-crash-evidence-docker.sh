#!/bin/sh
# tide-crash-evidence-docker.sh - what the docker driver knows of a container of the service that
# exited on its own: its host PID (noted by scale_up.yml in STATE_DIR/pids/NAME, since Docker
# forgets it at the exit), how it ended (from `docker inspect`, passed in), and, for the crash
# profile, its files: the container's filesystem, so that perf can name the dead process's
# frames (its binaries are gone with /proc/PID/root), and its core where it left one. Prints one
# line, "PID HOW; NOTE", which list.yml appends to the instance's "exited" line; prints nothing
# when no PID was noted for it.
#
#   tide-crash-evidence-docker.sh STATE_DIR NAME EXIT_CODE OOM_KILLED FINISHED_AT WORKDIR EXE KEEP
#
# With KEEP "on" (profiling.enabled) the files go to STATE_DIR/crashes/NAME-PID/: rootfs/ (from
# `docker export`), core (moved from the container's working directory, core_pattern "core" or
# "core.PID"), exe (the host path of the container's program under rootfs), exited_ms (from
# FINISHED_AT) and how; a second run for the same crash prints the first one's line and copies
# nothing. Reads core_pattern, never changes it. Crash folders older than an hour go.
set -eu
state=$1 name=$2 code=$3 oom=$4 finished=$5 workdir=${6:-/} exe=$7 keep=$8
pid=$(cat "$state/pids/$name" 2>/dev/null || true)
case "$pid" in '' | *[!0-9]* | 0) exit 0 ;; esac
how="exit code $code"
if [ "$oom" = "true" ] || [ "$oom" = "True" ]; then
    how="$how (killed by the kernel: out of memory)"
elif [ "$code" -gt 128 ] 2>/dev/null && sig=$(kill -l $((code - 128)) 2>/dev/null); then
    how="$how (killed by SIG$sig)"
fi
cdir=$state/crashes/$name-$pid
if [ "$keep" != on ]; then
    echo "$pid $how; no files kept (profiling.enabled is off)"
    exit 0
fi
if [ -f "$cdir/how" ]; then
    echo "$pid $how; $(cat "$cdir/how")"
    exit 0
fi
parent=$(dirname "$cdir")
mkdir -p "$parent"
find "$parent" -mindepth 1 -maxdepth 1 -type d -mmin +60 -exec rm -rf {} + 2>/dev/null || true
mkdir -p "$cdir/rootfs"
exited_ms=0
[ -z "$finished" ] || exited_ms=$(date -d "$finished" +%s%3N 2>/dev/null || echo 0)
echo "$exited_ms" >"$cdir/exited_ms"
note=""
if ! command -v docker >/dev/null 2>&1; then
    note="no files: the docker CLI is not on this host, so the container's binaries and core stay in it"
elif ! docker export "$name" | tar -x -C "$cdir/rootfs" 2>/dev/null; then
    note="no files: docker export $name failed"
else
    printf '%s\n' "$cdir/rootfs$exe" >"$cdir/exe"
    pattern=$(cat /proc/sys/kernel/core_pattern 2>/dev/null || echo "?")
    wd=$cdir/rootfs${workdir:-/}
    found=""
    case "$pattern" in
    '|'* | */*) ;;
    *)
        for c in "$wd/$pattern" "$wd"/"$pattern".* "$wd/core" "$wd"/core.*; do
            if [ -f "$c" ]; then
                found=$c
                break
            fi
        done
        ;;
    esac
    if [ -n "$found" ]; then
        mv "$found" "$cdir/core"
        note="core kept"
    else
        case "$pattern" in
        '|'*) note="no core: core_pattern hands cores to '${pattern#|}', outside the container" ;;
        */*) note="no core: core_pattern '$pattern' writes cores outside the container's working directory" ;;
        *) note="no core in the container's working directory ${workdir:-/} (core_pattern '$pattern'): the kernel wrote none for its process (core size limit 0, or a process it would not dump)" ;;
        esac
    fi
fi
printf '%s\n' "$note" >"$cdir/how"
echo "$pid $how; $note"
