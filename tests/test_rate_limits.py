"""Rate limits (api/rate_limits.py) with low settings on a fresh app: every
/auth/ route and every write, per IP and per user, counted in Redis; 429
with Retry-After and the JSON error body; open when Redis is down."""

from __future__ import annotations

import pytest

from tests.api_helpers import PASSWORD, ApiClient
from tests.processes import free_port

GENEROUS = "1000/minute"


@pytest.fixture
def limited(db, redis_client, environment):
    """`limited(**settings)`: a test client of an app with the rate limits on,
    their counters emptied first."""
    from api import create_app

    for key in redis_client.scan_iter("*veza-rate*"):
        redis_client.delete(key)

    def build(**settings: str) -> ApiClient:
        limits = {
            "RATE_LIMIT_AUTH_PER_IP": GENEROUS,
            "RATE_LIMIT_AUTH_PER_USER": GENEROUS,
            "RATE_LIMIT_WRITES_PER_IP": GENEROUS,
            "RATE_LIMIT_WRITES_PER_USER": GENEROUS,
            **settings,
        }
        environment(RATE_LIMIT_ENABLED="true", **limits)
        return ApiClient(create_app({"TESTING": True}).test_client())

    return build


def wrong_login(api: ApiClient, path: str = "/auth/login"):
    return api.post(path, json={"login": "nobody", "password": "not the password"})


def assert_rate_limited(response) -> None:
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json["error"]["code"] == "rate_limited"


def test_auth_routes_share_one_per_ip_limit(limited):
    api = limited(RATE_LIMIT_AUTH_PER_IP="3/minute")
    for _ in range(3):
        assert wrong_login(api).status_code == 401
    assert_rate_limited(wrong_login(api))
    # Any route under /auth/ draws on the same bucket, whatever its view.
    assert_rate_limited(api.post("/auth/refresh", json={"refresh_token": "x" * 43}))
    # Another address still logs in.
    other = api.client.post(
        "/api/v1/auth/login",
        json={"login": "nobody", "password": "x"},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert other.status_code == 401


def test_writes_are_limited_per_user_and_reads_are_not(limited):
    api = limited(RATE_LIMIT_WRITES_PER_USER="2/minute")
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    assert api.post("/rooms", alice, json={"name": "two"}).status_code == 201
    assert_rate_limited(api.post("/rooms", alice, json={"name": "three"}))
    assert api.get(f"/rooms/{room}", alice).status_code == 200
    # Bob, from the same address, has his own bucket.
    assert api.post("/rooms", bob, json={"name": "bob's"}).status_code == 201


def test_writes_are_limited_per_ip(limited):
    api = limited(RATE_LIMIT_WRITES_PER_IP="2/minute")
    users = [api.register() for _ in range(3)]
    assert api.post("/rooms", users[0], json={"name": "a"}).status_code == 201
    assert api.post("/rooms", users[1], json={"name": "b"}).status_code == 201
    assert_rate_limited(api.post("/rooms", users[2], json={"name": "c"}))


def test_auth_routes_are_limited_per_user(limited):
    api = limited(RATE_LIMIT_AUTH_PER_USER="1/minute")
    alice = api.register()  # register and login: anonymous, not counted per user
    assert api.post("/auth/logout", alice).status_code == 204
    other = api.post("/auth/login", json={"login": alice.username, "password": PASSWORD})
    assert other.status_code == 200
    token = other.json["access_token"]
    api.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
    # The second authenticated /auth/ call of the same user within the minute.
    assert_rate_limited(api.post("/auth/logout", headers={"Authorization": f"Bearer {token}"}))


def test_limits_fail_open_when_their_redis_is_down(limited):
    """Writes do not depend on Redis (the outbox): neither do their limits."""
    api = limited(
        RATE_LIMIT_STORAGE_URL=f"redis://127.0.0.1:{free_port()}/0",
        RATE_LIMIT_AUTH_PER_IP="1/minute",
        RATE_LIMIT_WRITES_PER_USER="1/minute",
    )
    alice = api.register()
    for name in ("one", "two", "three"):
        assert api.post("/rooms", alice, json={"name": name}).status_code == 201
    assert wrong_login(api).status_code == 401
