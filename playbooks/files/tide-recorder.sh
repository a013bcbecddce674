#!/bin/sh
# tide-recorder.sh - the flight recorder of a host: a low-rate perf sampler on every CPU (-a)
# that keeps only the last seconds in perf's ring buffers, so a profile of any instance on the
# host can show the seconds before it was asked for, even when the instance has died since.
# SIGUSR2 (sent to this script, which passes it on) makes perf write what the rings hold to
# DIR/ring.data.<time> and go on.
#
#   tide-recorder.sh DIR PERF RATE_HZ PAGES [MAX_BYTES]
#
# Per-CPU rather than per-process events: an event that follows a process is switched in and
# out with it on every context switch, which cost a busy instance ~3% of its requests/s here
# (bench/recorder); per-CPU sampling costs it the timer interrupts only. The profiles take
# their instance's samples apart by PID. The process driver runs this as the supervisord
# program tide-recorder (one per host).
#
# Why `-e cpu-clock/overwrite/` and not `--overwrite`: with the global option perf 6.1 also
# overwrites the process maps and names and writes those of the processes alive at dump time
# (--tail-synthesize), so a process that crashed before the dump has no symbols. With the
# event's own overwrite term only the samples go to the overwritten rings; perf adds a
# tracking event whose maps, names, forks and exits go to the file as they happen, and writes
# the maps of every live process at the head of each new file. A crashed instance's frames then
# resolve from its own maps. Those tracking records grow the current file (about 750 bytes per
# process started on the host), so once it passes MAX_BYTES (default 64 MiB) the recorder
# switches to a new file and deletes the old one: the rings start afresh then, the only time a
# dump can hold less than the window.
#
# `-k realtime`: samples are stamped with the wall clock, so a profile keeps exactly the seconds
# it names (the window before a dump, or before a crash's exit, which supervisord and Docker
# report in wall time) whatever the process did in them, even nothing.
set -eu
dir=$1 perf=$2 rate=$3 pages=$4 max_bytes=${5:-67108864}
mkdir -p "$dir"
# Dumps are decoded and removed by tide-recorder-dump.sh; any left by a crash of it go now.
rm -f "$dir"/ring.data "$dir"/ring.data.*
echo "tide-recorder: recording every CPU at $rate Hz into $dir"
"$perf" record -a --switch-output=signal --no-buildid-cache --no-bpf-event -k realtime \
    -F "$rate" -e cpu-clock/overwrite/ -g -m "$pages" -o "$dir/ring.data" &
perf_pid=$!
# supervisord signals this script: USR2 asks perf for a dump, INT and TERM stop it.
trap 'kill -USR2 "$perf_pid" 2>/dev/null || true' USR2
sleep_pid=""
trap 'kill -INT "$perf_pid" 2>/dev/null || true; [ -z "$sleep_pid" ] || kill "$sleep_pid" 2>/dev/null || true
      wait "$perf_pid" || true; exit 0' INT TERM

# rotate: under the dump lock (so no dump takes this file for its own), switch, wait for the
# switched-out file and delete it.
rotate() {
    exec 9>"$dir/switch.lock"
    flock 9
    before=$(ls "$dir"/ring.data.* 2>/dev/null | wc -l)
    kill -USR2 "$perf_pid"
    n=0
    while [ "$(ls "$dir"/ring.data.* 2>/dev/null | wc -l)" -le "$before" ] && [ "$n" -lt 50 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    sleep 0.2 # perf closes the file right after it appears
    rm -f "$dir"/ring.data.*
    exec 9>&-
    echo "tide-recorder: tracking records passed $max_bytes bytes; started a new file"
}

while kill -0 "$perf_pid" 2>/dev/null; do
    # wait returns early when a trapped signal arrives; the loop then checks perf again.
    sleep 10 &
    sleep_pid=$!
    wait "$sleep_pid" || true
    size=$(stat -c %s "$dir/ring.data" 2>/dev/null || echo 0)
    if [ "$size" -gt "$max_bytes" ]; then
        rotate
    fi
done
wait "$perf_pid"
