# Sourced by scripts/run and scripts/test: make this machine able to run
# veza-worker. Installs only what is missing and starts only what is not
# already reachable, so it is quick on a machine that has everything.
#
# PostgreSQL and Redis are the servers DATABASE_URL and REDIS_URL name. One
# on this machine (loopback, or a unix socket) that does not answer is
# installed if need be and started, on the URL's port, and the database's
# role and database are made in that local cluster. One elsewhere (a
# managed database) is only probed: it must answer, and nothing is
# installed, started or created for it. So are Redis Sentinels
# (REDIS_URL=sentinel://...;sentinel://...), wherever they are: one of them
# must answer.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export DATABASE_URL="${DATABASE_URL:-postgresql+psycopg://veza:veza@127.0.0.1:5432/veza}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export STORAGE_DIR="${STORAGE_DIR:-$ROOT/var/storage}"
# What the scripts make and keep: the Redis and clamd they start, the
# generated Flower login.
export VEZA_VAR_DIR="${VEZA_VAR_DIR:-$ROOT/var}"
VENV="${VEZA_VENV:-$ROOT/.venv}"
# zip: the tests' ZipCrypto archives (zip -P), which Python cannot write.
# g++: pdqhash (the image blocklist's PDQ) comes as source only.
# postgresql and redis-server only when their URL is local (ensure_*, below).
APT_PACKAGES=(clamav-daemon clamav libmagic1 python3-venv python3-dev g++ libvips-tools zip)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_system_packages() { install_missing "${APT_PACKAGES[@]}"; }

install_missing() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

LOCK=requirements/dev.txt

venv_sees_system_packages() {
    ! grep -qiE '^include-system-site-packages *= *false' "$VENV/pyvenv.cfg" 2>/dev/null
}

# Packages in the venv that the lock does not name (left by an older lock),
# to be uninstalled, as pip-sync would.
unlocked_packages() {
    "$VENV/bin/python" - "$LOCK" <<'PY'
import importlib.metadata as md, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
with open(sys.argv[1]) as f:
    locked = {norm(m) for m in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", f.read(), re.M)}
installed = {norm(d.metadata["Name"]) for d in md.distributions()}
print(" ".join(sorted(installed - locked - {"pip", "veza-worker"})))
PY
}

install_python_packages() {
    # The venv holds exactly requirements/dev.txt (exact versions, checked
    # against their hashes) and the project, editable. It does not see the
    # machine's site-packages, which would otherwise shadow the pins with
    # whatever the machine has (docs/dependencies.md).
    if [ -e "$VENV/pyvenv.cfg" ] && venv_sees_system_packages; then
        say "recreating $VENV without the system site-packages"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
            || say "warning: $("$VENV/bin/python" -V) here; the lock is resolved for Python 3.11"
    fi
    # Reinstall when the lock or pyproject.toml changed since the last install.
    local want
    want="$(cat "$LOCK" pyproject.toml | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ] \
        || ! "$VENV/bin/python" -c "import worker, api, db" 2>/dev/null; then
        say "installing $LOCK and the project into $VENV"
        local pip=("$VENV/bin/pip" --disable-pip-version-check)
        "${pip[@]}" install -q --require-hashes -r "$LOCK"
        # setuptools, the build backend, came from the lock: build with it.
        "${pip[@]}" install -q --no-deps --no-build-isolation -e .
        local extra
        extra="$(unlocked_packages)"
        if [ -n "$extra" ]; then
            say "removing what the lock no longer names: $extra"
            # shellcheck disable=SC2086
            "${pip[@]}" uninstall -q -y $extra
        fi
        local broken
        if ! broken="$("${pip[@]}" check)"; then
            printf '%s\n' "$broken" >&2
            say "pyproject.toml asks for what $LOCK lacks: run scripts/lock and commit requirements/"
            return 1
        fi
        echo "$want" > "$VENV/.installed"
    fi
    export PATH="$VENV/bin:$PATH"
}

# url FIELD URL: a part of a server's URL (scripts/server_url.py).
url() { python3 "$ROOT/scripts/server_url.py" "$@"; }

# ensure_reachable NAME VARIABLE: succeeds when the server $VARIABLE names
# answers; fails with a message when it does not and is not on this
# machine (bootstrap starts servers only here); else returns 2: start it.
ensure_reachable() {
    local name="$1" value="${!2}"
    [ "$(url answers "$value")" = yes ] && return 0
    if [ "$(url local "$value")" != yes ]; then
        say "$2 names $name at $(url where "$value"), which does not answer;" \
            "bootstrap starts $name only on this machine: start that server, or change $2"
        return 1
    fi
    return 2
}

# wait_until_reachable NAME VARIABLE: after a start, up to 10 s.
wait_until_reachable() {
    for _ in $(seq 50); do [ "$(url answers "${!2}")" = yes ] && return; sleep 0.2; done
    say "$1 did not answer at $(url where "${!2}") ($2) after starting it"
    return 1
}

# The local cluster (version and name) that listens on a port, if any.
local_cluster() { pg_lsclusters -h 2>/dev/null | awk -v port="$1" '$3 == port { print $1, $2; exit }'; }

ensure_postgres() {
    local status=0 port cluster
    ensure_reachable PostgreSQL DATABASE_URL || status=$?
    [ "$status" = 1 ] && return 1
    [ "$(url local "$DATABASE_URL")" = yes ] || return 0
    port="$(url port "$DATABASE_URL")"
    if [ "$status" = 2 ]; then
        install_missing postgresql
        cluster="$(local_cluster "$port")"
        if [ -z "$cluster" ]; then
            say "no local PostgreSQL cluster listens on port $port (DATABASE_URL):" \
                "make one (pg_createcluster --port $port VERSION main) or change DATABASE_URL"
            return 1
        fi
        say "starting PostgreSQL $cluster on port $port"
        # shellcheck disable=SC2086  # "VERSION NAME": two arguments
        as_root pg_ctlcluster --skip-systemctl-redirect $cluster start \
            || as_root pg_ctlcluster $cluster start
        wait_until_reachable PostgreSQL DATABASE_URL
    fi
    create_role_and_database "$port"
}

# The URL's role (may create the test databases) and its database, in the
# local cluster on PORT, through its socket as the postgres superuser. Only
# in a cluster of this machine's PostgreSQL: a server on a loopback port
# that is not one (a container's) is left alone.
create_role_and_database() {
    [ -n "$(url user "$DATABASE_URL")" ] || return 0  # the OS user's own role
    if [ -z "$(local_cluster "$1")" ]; then
        say "PostgreSQL on port $1 is not a local cluster: its roles are left as they are"
        return
    fi
    as_root runuser -u postgres -- psql -p "$1" -qtAX -v ON_ERROR_STOP=1 \
        -v role="$(url user "$DATABASE_URL")" -v password="$(url password "$DATABASE_URL")" \
        -v db="$(url database "$DATABASE_URL")" <<'SQL' >/dev/null
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
}

ensure_redis() {
    local status=0 host password
    local -a listen
    ensure_reachable Redis REDIS_URL || status=$?
    [ "$status" = 2 ] || return "$status"
    install_missing redis-server
    if [ -n "$(url socket "$REDIS_URL")" ]; then
        listen=(--port 0 --unixsocket "$(url socket "$REDIS_URL")")
    else
        host="$(url host "$REDIS_URL")"
        [ "$host" = localhost ] && host=127.0.0.1  # redis binds addresses only
        listen=(--bind "$host" --port "$(url port "$REDIS_URL")")
    fi
    password="$(url password "$REDIS_URL")"
    [ -n "$password" ] && listen+=(--requirepass "$password")
    say "starting Redis on $(url where "$REDIS_URL")"
    mkdir -p "$VEZA_VAR_DIR/redis"
    redis-server --daemonize yes "${listen[@]}" --save "" --appendonly no \
        --dir "$VEZA_VAR_DIR/redis" --logfile "$VEZA_VAR_DIR/redis/redis.log"
    wait_until_reachable Redis REDIS_URL
}

bootstrap() {
    install_system_packages
    install_python_packages
    ensure_postgres
    ensure_redis
    mkdir -p "$STORAGE_DIR" "$VEZA_VAR_DIR"
}
