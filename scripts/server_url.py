"""What scripts/bootstrap.sh needs to know of a server's URL (DATABASE_URL,
REDIS_URL), read with the machine's python3 before any venv exists:

    python3 scripts/server_url.py FIELD URL

prints one field: `host`, `port`, `user`, `password`, `database`, `socket`
(the unix socket it names, else empty), `where` (host:port or the socket,
for messages), `local` (`yes` when the server would run on this machine:
loopback, or a unix socket) or `answers` (`yes` when something accepts a
connection there within 2 s; only a connection, no protocol).

A REDIS_URL naming Redis Sentinels (`sentinel://h1:26379/0;sentinel://h2:26379/0`)
gives the first one's fields, with `where` listing them all; it `answers`
when one of them does, and is never `local`: a failover needs machines of
its own, which bootstrap never starts."""

from __future__ import annotations

import socket
import sys
from urllib.parse import parse_qs, unquote, urlsplit

LOOPBACK = {"localhost", "127.0.0.1", "::1"}
DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379, "rediss": 6379, "sentinel": 26379}
# libpq's socket directory on Debian, when a PostgreSQL URL names no host.
PG_SOCKET_DIR = "/var/run/postgresql"


def servers(url: str) -> list[str]:
    """The URL of each server `url` names: itself, or each Sentinel."""
    return [part.strip() for part in url.split(";")] if url.startswith("sentinel://") else [url]


def fields(url: str) -> dict[str, str]:
    first, *others = servers(url)
    found = one_server(first)
    if others or first.startswith("sentinel://"):
        addresses = [one_server(each)["where"] for each in (first, *others)]
        found.update(where="Sentinels " + ", ".join(addresses), local="no")
    return found


def one_server(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]  # postgresql+psycopg: postgresql
    # libpq also takes the host from the query (?host=/var/run/postgresql).
    host = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
    port = str(parts.port or DEFAULT_PORTS.get(scheme, ""))
    if scheme == "unix":  # redis: unix:///run/redis/redis.sock
        sock = parts.path
    elif scheme == "postgresql" and (host == "" or host.startswith("/")):
        sock = f"{host or PG_SOCKET_DIR}/.s.PGSQL.{port}"
    else:
        sock = ""
    return {
        "host": host,
        "port": port,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": parts.path.lstrip("/") if scheme == "postgresql" else "",
        "socket": sock,
        "where": sock or f"{host}:{port}",
        "local": "yes" if sock or host in LOOPBACK else "no",
    }


def answers(url: str) -> bool:
    return any(one_answers(each) for each in servers(url))


def one_answers(url: str) -> bool:
    where = one_server(url)
    try:
        if where["socket"]:
            with socket.socket(socket.AF_UNIX) as unix:
                unix.settimeout(2)
                unix.connect(where["socket"])
        else:
            socket.create_connection((where["host"], int(where["port"])), timeout=2).close()
    except OSError:
        return False
    return True


def main(field: str, url: str) -> None:
    if field == "answers":
        print("yes" if answers(url) else "no")
    else:
        print(fields(url)[field])


if __name__ == "__main__":
    main(*sys.argv[1:])
