# Sourced by scripts/run and scripts/test: make this machine able to run
# veza-worker. Installs only what is missing and starts only what is not
# already reachable, so it is quick on a machine that has everything.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export DATABASE_URL="${DATABASE_URL:-postgresql+psycopg://veza:veza@127.0.0.1:5432/veza}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export STORAGE_DIR="${STORAGE_DIR:-$ROOT/var/storage}"
VENV="${VEZA_VENV:-$ROOT/.venv}"
# zip: the tests' ZipCrypto archives (zip -P), which Python cannot write.
APT_PACKAGES=(postgresql redis-server clamav-daemon clamav libmagic1 python3-venv python3-dev libvips-tools zip)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_system_packages() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
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

pg_reachable() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

start_postgres() {
    if ! pg_reachable; then
        say "starting PostgreSQL"
        local version
        version="$(ls /etc/postgresql | sort -V | tail -1)"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start \
            || as_root pg_ctlcluster "$version" main start
        for _ in $(seq 50); do pg_reachable && break; sleep 0.2; done
    fi
    # The veza role owns the application database and may create the test
    # databases. Made through the local socket as the postgres superuser.
    as_root runuser -u postgres -- psql -qtAX -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'veza') THEN
        CREATE ROLE veza LOGIN CREATEDB PASSWORD 'veza';
    END IF;
END $$;
SELECT 'CREATE DATABASE veza OWNER veza'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'veza') \gexec
SQL
}

redis_reachable() { redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; }

start_redis() {
    if ! redis_reachable; then
        say "starting Redis"
        mkdir -p "$ROOT/var/redis"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir "$ROOT/var/redis" --logfile "$ROOT/var/redis/redis.log"
        for _ in $(seq 50); do redis_reachable && break; sleep 0.2; done
    fi
}

bootstrap() {
    install_system_packages
    install_python_packages
    start_postgres
    start_redis
    mkdir -p "$STORAGE_DIR"
}
