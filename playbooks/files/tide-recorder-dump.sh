#!/bin/sh
# tide-recorder-dump.sh - asks a host's flight recorder (tide-recorder.sh) for what its rings
# hold and decodes the samples of the given processes into a `perf script` file.
#
#   tide-recorder-dump.sh PERF OUT SIGNAL-COMMAND DIR PIDS [DEAD-PID SYMFS]
#
# SIGNAL-COMMAND (run with sh -c) must send SIGUSR2 to the recorder, e.g. "supervisorctl -c
# CONF signal USR2 tide-recorder". PIDS is a comma-separated list. Waits up to 5 s for the dump
# (complete once its size holds still), decodes only those processes' samples, and removes the
# dump: the rest of the host's processes are not kept on disk. Exits 1 when no dump came. A
# process that has exited is decoded like a live one (the recorder keeps its maps); when its
# binaries were inside a container that is gone, DEAD-PID (one of PIDS) is decoded with
# `--symfs SYMFS`, a copy of that container's filesystem, and the other PIDS as usual.
set -eu
perf=$1 out=$2 signal=$3 dir=$4 pids=$5 dead=${6:-} symfs=${7:-}
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
# The recorder takes this lock too when it starts a new file on its own: one switch at a time.
exec 9>"$dir/switch.lock"
flock -w 10 9
sleep 0.01 # a dump written from now on is newer than the stamp
sh -c "$signal" >/dev/null
dump=""
n=0
while [ -z "$dump" ] && [ "$n" -lt 50 ]; do
    # shellcheck disable=SC2012
    newest=$(ls -t "$dir"/ring.data.* 2>/dev/null | head -n 1)
    if [ -n "$newest" ] && [ "$newest" -nt "$stamp" ]; then
        s1=$(stat -c %s "$newest")
        sleep 0.1
        s2=$(stat -c %s "$newest")
        [ "$s1" = "$s2" ] && [ "$s1" -gt 0 ] && dump=$newest
    else
        sleep 0.1
    fi
    n=$((n + 1))
done
if [ -z "$dump" ]; then
    echo "tide-recorder-dump: the recorder in $dir wrote no dump within 5 s" >&2
    exit 1
fi
status=0
fields=comm,pid,tid,time,ip,sym,dso
if [ -n "$dead" ] && [ -n "$symfs" ]; then
    rest=$(printf '%s\n' "$pids" | tr ',' '\n' | grep -vx "$dead" | paste -sd, - || true)
    # --symfs would also look for the kernel's symbols under SYMFS: they are the host's.
    "$perf" script -i "$dump" --pid "$dead" --symfs "$symfs" --kallsyms /proc/kallsyms \
        -F "$fields" >"$out" || status=$?
    if [ -n "$rest" ] && [ "$status" -eq 0 ]; then
        "$perf" script -i "$dump" --pid "$rest" -F "$fields" >>"$out" || status=$?
    fi
else
    "$perf" script -i "$dump" --pid "$pids" -F "$fields" >"$out" || status=$?
fi
rm -f "$dump"
exit "$status"
