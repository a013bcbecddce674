#!/bin/sh
# tide-recorder-keep.sh - keeps a host's flight recorder (tide-recorder.sh, beside this script)
# where no supervisord runs it: the docker driver's hosts. The recorder runs detached, in a
# session of its own, and is found again through DIR/recorder.pid, so it outlives the job that
# started it and any restart of tide, and the next list keeps it rather than starting another.
#
#   tide-recorder-keep.sh on DIR PERF RATE_HZ PAGES   start it, or keep it when it runs with these
#                                                      (and this tide-recorder.sh)
#   tide-recorder-keep.sh off DIR                      stop it
#   tide-recorder-keep.sh signal DIR SIGNAL            send SIGNAL (USR2: a dump) to it
#
# Prints what it did: "running PID", "started PID", "restarted PID" (other settings), "stopped
# PID" or "not running". One at a time per DIR (flock DIR/keep.lock). Exits 1 when the recorder
# is not running after "on" (its log, DIR/recorder.log, says why) or for "signal".
set -eu
what=$1 dir=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
exec 8>"$dir/keep.lock"
flock -w 10 8
pidf=$dir/recorder.pid
pid=""

# The pid in the file, when that process is still a tide-recorder.sh (pids are reused).
alive() {
    pid=$(cat "$pidf" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'tide-recorder\.sh'
}

stop() {
    kill -TERM "$pid" 2>/dev/null || true
    n=0
    while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 100 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pidf"
}

case "$what" in
on)
    # the script's own checksum too: a recorder started by an older tide-recorder.sh goes
    args="$3 $4 $5 $(cksum <"$here/tide-recorder.sh" | cut -d' ' -f1)"
    verb=started
    if alive; then
        if [ "$(cat "$dir/recorder.args" 2>/dev/null || true)" = "$args" ]; then
            echo "running $pid"
            exit 0
        fi
        stop
        verb=restarted
    fi
    # In the background of a script, setsid execs the recorder itself: $! is its pid, and the
    # leader of its own session and process group.
    setsid sh "$here/tide-recorder.sh" "$dir" "$3" "$4" "$5" >>"$dir/recorder.log" 2>&1 \
        </dev/null 8>&- &
    echo "$!" >"$pidf"
    echo "$args" >"$dir/recorder.args"
    sleep 0.5
    if alive; then
        echo "$verb $pid"
    else
        echo "the recorder exited at once: $(tail -n 3 "$dir/recorder.log" | tr '\n' ' ')" >&2
        rm -f "$pidf"
        exit 1
    fi
    ;;
off)
    if alive; then
        stop
        echo "stopped $pid"
    else
        rm -f "$pidf"
        echo "not running"
    fi
    ;;
signal)
    if alive; then
        kill -"$3" "$pid"
    else
        echo "tide-recorder-keep: no recorder runs in $dir" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: tide-recorder-keep.sh on DIR PERF RATE_HZ PAGES | off DIR | signal DIR SIGNAL" >&2
    exit 2
    ;;
esac
