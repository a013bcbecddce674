#!/bin/sh
# tide-recorder.sh - the flight recorder of one instance: a low-rate perf sampler attached to
# the instance's process that keeps only its last seconds in perf's ring buffer (--overwrite).
# SIGUSR2 makes perf write what the ring holds to DIR/ring.data.<time> and go on; each dump
# carries the process's maps and names as they are then (--tail-synthesize), so its frames
# resolve. When the instance exits (a crash, a stop) perf writes a last dump and exits, and so
# does this script; that last one has no maps (the process is gone when it is written).
#
#   tide-recorder.sh DIR PERF RATE_HZ PAGES PID-COMMAND...
#
# PID-COMMAND prints the instance's PID (0 or nothing while it is not running): this script
# waits up to 10 s for one. The process driver runs it as the supervisord program
# <instance>-recorder, PID-COMMAND being `supervisorctl -c CONF pid <instance>`, so a restarted
# instance gets a new recorder from supervisord's autorestart, never two.
set -eu
dir=$1 perf=$2 rate=$3 pages=$4
shift 4
pid=0
tries=0
while [ "$pid" = 0 ]; do
    pid=$("$@" 2>/dev/null || true)
    case $pid in '' | *[!0-9]*) pid=0 ;; esac
    [ "$pid" != 0 ] && break
    tries=$((tries + 1))
    if [ "$tries" -ge 100 ]; then
        echo "tide-recorder: no process to record after 10 s ($*)" >&2
        exit 1
    fi
    sleep 0.1
done
mkdir -p "$dir"
# Dumps of earlier processes: the newest three stay (a crash's last seconds among them).
# shellcheck disable=SC2012
ls -t "$dir"/ring.data.* 2>/dev/null | tail -n +4 | while read -r old; do rm -f "$old"; done
echo "$pid" >"$dir/target.pid"
echo "tide-recorder: recording pid $pid at $rate Hz into $dir"
exec "$perf" record --overwrite --switch-output=signal --tail-synthesize --no-buildid-cache \
    -F "$rate" \
    -e cpu-clock -g -m "$pages" -p "$pid" -o "$dir/ring.data"
