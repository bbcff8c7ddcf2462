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
APT_PACKAGES=(postgresql redis-server clamav-daemon clamav libmagic1 python3-venv python3-dev libvips-tools)

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

install_python_packages() {
    # --system-site-packages: reuse what the machine already has installed;
    # pip installs into the venv only what is missing or too old.
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        python3 -m venv --system-site-packages "$VENV"
    fi
    if ! "$VENV/bin/python" -c "import worker, api, db" 2>/dev/null \
        || [ pyproject.toml -nt "$VENV/.installed" ]; then
        say "installing the project and its Python dependencies"
        "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev]"
        touch "$VENV/.installed"
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
