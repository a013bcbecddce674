#!/bin/sh
# tide-recorder-dump.sh - asks running flight recorders (tide-recorder.sh) for what their rings
# hold, all at the same moment, and decodes the dumps into one `perf script` file.
#
#   tide-recorder-dump.sh PERF OUT SIGNAL-COMMAND DIR...
#
# SIGNAL-COMMAND is run once as `SIGNAL-COMMAND` (e.g. "supervisorctl -c CONF signal USR2
# production1-recorder production0-recorder"): it must send SIGUSR2 to every recorder of the
# DIRs. Waits up to 5 s for each DIR's new dump (perf writes it whole, then renames nothing:
# a dump is complete once its size holds still). Exits 1 when a recorder wrote nothing.
set -eu
perf=$1 out=$2 signal=$3
shift 3
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
sleep 0.01 # dumps written from now on are newer than the stamp
sh -c "$signal" >/dev/null
: >"$out"
for dir in "$@"; do
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
    "$perf" script -i "$dump" -F comm,pid,tid,time,ip,sym,dso >>"$out"
done
