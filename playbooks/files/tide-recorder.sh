#!/bin/sh
# tide-recorder.sh - the flight recorder of a host: a low-rate perf sampler on every CPU (-a)
# that keeps only the last seconds in perf's ring buffers (--overwrite), so a profile of any
# instance on the host can show the seconds before it was asked for. SIGUSR2 makes perf write
# what the rings hold to DIR/ring.data.<time> and go on; each dump carries the maps and names
# of the processes running then (--tail-synthesize), so their frames resolve.
#
#   tide-recorder.sh DIR PERF RATE_HZ PAGES
#
# Per-CPU rather than per-process events: an event that follows a process is switched in and
# out with it on every context switch, which cost a busy instance ~3% of its requests/s here
# (bench/recorder); per-CPU sampling costs it the timer interrupts only. The profiles take
# their instance's samples apart by PID. The process driver runs this as the supervisord
# program tide-recorder (one per host).
set -eu
dir=$1 perf=$2 rate=$3 pages=$4
mkdir -p "$dir"
# Dumps are decoded and removed by tide-recorder-dump.sh; any left by a crash of it go now.
rm -f "$dir"/ring.data "$dir"/ring.data.*
echo "tide-recorder: recording every CPU at $rate Hz into $dir"
exec "$perf" record -a --overwrite --switch-output=signal --tail-synthesize --no-buildid-cache \
    -F "$rate" -e cpu-clock -g -m "$pages" -o "$dir/ring.data"
