# Sourced by scripts/run: make sure a clamd answers, and export CLAMD_SOCKET;
# stop_clamd stops it again if it was started here.
#
# With CLAMD_SOCKET or CLAMD_HOST already set, that clamd is used as is.
# Otherwise a local clamd is started on $VEZA_VAR_DIR/clamav/clamd.sock,
# using the machine's signature database when freshclam has filled one, and
# else a one-signature database (EICAR) so that the pipeline runs end to end
# on a machine with no internet: say so loudly, since that scanner finds
# nothing real.

clamd_answers() {
    python -c "import clamd, sys; clamd.ClamdUnixSocket(sys.argv[1]).ping()" "$1" 2>/dev/null
}

ensure_clamd() {
    if [ -n "${CLAMD_SOCKET:-}" ] || [ -n "${CLAMD_HOST:-}" ]; then
        return
    fi
    local dir="$VEZA_VAR_DIR/clamav"
    export CLAMD_SOCKET="$dir/clamd.sock"
    clamd_answers "$CLAMD_SOCKET" && return
    mkdir -p "$dir/db"
    local database=/var/lib/clamav
    if ! ls "$database"/*.c[lv]d >/dev/null 2>&1; then
        database="$dir/db"
        say "WARNING: no ClamAV signatures in /var/lib/clamav (run freshclam);" \
            "using a test database that only knows EICAR"
        printf '44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n' > "$database/eicar.hdb"
    fi
    # The scanning policy (limits, alerts) is deploy/clamd.conf's, copied
    # from between its markers: every clamd of the project scans alike.
    cat > "$dir/clamd.conf" <<CONF
LocalSocket $CLAMD_SOCKET
DatabaseDirectory $database
LogFile $dir/clamd.log
PidFile $dir/clamd.pid
CONF
    sed -n '/^# BEGIN scanning policy/,/^# END scanning policy/p' \
        "$ROOT/deploy/clamd.conf" >> "$dir/clamd.conf"
    say "starting clamd on $CLAMD_SOCKET"
    clamd --config-file="$dir/clamd.conf"
    # clamd detaches from the terminal: Ctrl-C does not reach it, stop_clamd does.
    STARTED_CLAMD_PID=""
    for _ in $(seq 300); do
        if clamd_answers "$CLAMD_SOCKET"; then
            STARTED_CLAMD_PID="$(cat "$dir/clamd.pid")"
            return
        fi
        sleep 0.2
    done
    say "clamd did not answer; see $dir/clamd.log" && return 1
}

# Stops the clamd that ensure_clamd started, if it started one, and waits
# (up to 10 s) until it is gone. A clamd that was there already is left.
stop_clamd() {
    [ -n "${STARTED_CLAMD_PID:-}" ] || return 0
    say "stopping clamd"
    kill "$STARTED_CLAMD_PID" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$STARTED_CLAMD_PID" 2>/dev/null || return 0
        sleep 0.1
    done
    say "clamd ($STARTED_CLAMD_PID) did not stop"
}
