#!/bin/sh
# tide-crash-evidence.sh - what the process driver knows of an instance whose process exited on
# its own: its last pid and how it ended (from supervisord's log), and its core, kept before the
# instance's next start can overwrite it. Prints one line, "PID HOW; CORE", which list.yml
# appends to the instance's "exited" line; prints nothing when supervisord's log no longer
# names the instance's pid.
#
#   tide-crash-evidence.sh SUPERVISOR_CONFIG NAME STATE_DIR KEEP
#
# The instance's working directory is STATE_DIR/instances/NAME (where the kernel writes a core
# when core_pattern is a plain file name, such as the default "core"). With KEEP "on"
# (profiling.enabled) the core moves to STATE_DIR/crashes/NAME-PID/core for the crash profile,
# and a second run for the same crash prints the first run's line and moves nothing; with
# "off" nothing is moved. CRASH_DIR/exited_ms holds when it ended (supervisord's log stamp).
# systemd-coredump is asked through coredumpctl. Reads core_pattern, never changes it. Crash
# folders older than an hour go: a profile takes its stack within seconds, and a core nobody
# took is not kept for ever.
set -eu
conf=$1 name=$2 state=$3 keep=$4
idir=$state/instances/$name
log=$(supervisorctl -c "$conf" maintail -200000 2>/dev/null || true)
pid=$(printf '%s\n' "$log" | sed -n "s/.*spawned: '$name' with pid \([0-9][0-9]*\).*/\1/p" | tail -n 1)
[ -n "$pid" ] || exit 0
how=$(printf '%s\n' "$log" | sed -n "s/.*exited: $name (\(.*\))\$/\1/p" | tail -n 1)
# supervisord's own verdict ("; not expected": the exit code is not in exitcodes) says nothing
# more here: every exit of an instance is unexpected.
how=${how%; not expected}
how=${how%; expected}
how=${how:-exited}
# When it ended: the stamp of that log line (supervisord writes local time), in ms since the epoch.
stamp=$(printf '%s\n' "$log" | sed -n "s/^\([0-9-]* [0-9:]*\),\([0-9]*\) .*exited: $name (.*/\1.\2/p" | tail -n 1)
exited_ms=0
[ -z "$stamp" ] || exited_ms=$(date -d "$stamp" +%s%3N 2>/dev/null || echo 0)
cdir=$state/crashes/$name-$pid
if [ "$keep" != on ]; then
    echo "$pid $how; core not looked for (profiling.enabled is off)"
    exit 0
fi
if [ -f "$cdir/how" ]; then
    echo "$pid $how; $(cat "$cdir/how")"
    exit 0
fi
parent=$(dirname "$cdir")
mkdir -p "$parent"
find "$parent" -mindepth 1 -maxdepth 1 -type d -mmin +60 -exec rm -rf {} + 2>/dev/null || true
mkdir -p "$cdir"
echo "$exited_ms" >"$cdir/exited_ms"
pattern=$(cat /proc/sys/kernel/core_pattern 2>/dev/null || echo "?")
note=""
case "$pattern" in
'|'*systemd-coredump*)
    if command -v coredumpctl >/dev/null 2>&1 &&
        coredumpctl --no-pager dump "$pid" -o "$cdir/core" >/dev/null 2>&1; then
        note="core kept (from systemd-coredump)"
    else
        note="no core: core_pattern hands cores to systemd-coredump, which has none for pid $pid"
    fi
    ;;
'|'*)
    note="no core: core_pattern hands cores to '${pattern#|}', which tide does not read"
    ;;
*/*)
    note="no core: core_pattern '$pattern' writes cores outside the instance's directory"
    ;;
*)
    # The file name core_pattern gives, %p the pid, other specifiers matched by a glob; then
    # core.PID (core_uses_pid) and core.
    glob=$(printf '%s' "$pattern" | sed "s/%p/$pid/g; s/%%/%/g; s/%[a-zA-Z]/*/g")
    found=""
    for c in "$idir"/$glob "$idir/$pattern.$pid" "$idir/core.$pid" "$idir/core"; do
        if [ -f "$c" ]; then
            found=$c
            break
        fi
    done
    if [ -n "$found" ]; then
        mv "$found" "$cdir/core"
        note="core kept"
    else
        note="no core in $idir (core_pattern '$pattern'): the process's core size limit (ulimit -c) was 0, or it did not die of a signal that dumps core"
    fi
    ;;
esac
printf '%s\n' "$note" >"$cdir/how"
echo "$pid $how; $note"
