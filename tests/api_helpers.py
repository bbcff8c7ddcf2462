"""Fixtures and helpers for the API tests: a real Flask app on the per-run
database, and users who are registered and logged in through the API."""

from __future__ import annotations

import io
import itertools

import pytest

API = "/api/v1"
PASSWORD = "correct horse battery"
_names = itertools.count(1)


class ApiClient:
    """The Flask test client, speaking /api/v1 with a user's bearer token."""

    def __init__(self, client) -> None:
        self.client = client

    def call(self, method: str, path: str, user: User | None = None, **kwargs):
        headers = kwargs.pop("headers", {})
        if user is not None:
            headers["Authorization"] = f"Bearer {user.token}"
        return self.client.open(API + path, method=method, headers=headers, **kwargs)

    def get(self, path, user=None, **kw):
        return self.call("GET", path, user, **kw)

    def post(self, path, user=None, **kw):
        return self.call("POST", path, user, **kw)

    def put(self, path, user=None, **kw):
        return self.call("PUT", path, user, **kw)

    def patch(self, path, user=None, **kw):
        return self.call("PATCH", path, user, **kw)

    def delete(self, path, user=None, **kw):
        return self.call("DELETE", path, user, **kw)

    def register(self, username: str | None = None) -> User:
        username = username or f"user{next(_names)}"
        created = self.post(
            "/auth/register",
            json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
        )
        assert created.status_code == 201, created.json
        tokens = self.post("/auth/login", json={"login": username, "password": PASSWORD})
        assert tokens.status_code == 200, tokens.json
        return User(
            created.json["id"], username, tokens.json["access_token"], tokens.json["refresh_token"]
        )

    def room(self, owner: User, **settings) -> int:
        created = self.post("/rooms", owner, json={"name": "General", **settings})
        assert created.status_code == 201, created.json
        return created.json["id"]

    def join(self, room_id: int, user: User) -> None:
        joined = self.post(f"/rooms/{room_id}/members", user, json={})
        assert joined.status_code == 201, joined.json

    def say(self, room_id: int, user: User, content: str = "hello", **extra) -> dict:
        posted = self.post(f"/rooms/{room_id}/messages", user, json={"content": content, **extra})
        assert posted.status_code == 201, posted.json
        return posted.json


class User:
    def __init__(self, user_id: int, username: str, token: str, refresh_token: str) -> None:
        self.id, self.username = user_id, username
        self.token, self.refresh_token = token, refresh_token


@pytest.fixture
def app(db, redis_client):
    from api import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def api(app) -> ApiClient:
    return ApiClient(app.test_client())


def error_code(response) -> str:
    return response.json["error"]["code"]


def write_attempts(api: ApiClient, user: User, room: int, message_id: int) -> dict[str, int]:
    """The status of each kind of write `user` may try in `room`: a post, an
    edit of their message `message_id`, a reaction on it, an upload (what a
    mute or a ban must all refuse)."""
    responses = {
        "post": api.post(f"/rooms/{room}/messages", user, json={"content": "hi"}),
        "edit": api.patch(f"/messages/{message_id}", user, json={"content": "rewritten"}),
        "react": api.post(f"/messages/{message_id}/reactions", user, json={"emoji": "🎉"}),
        "upload": api.post(
            f"/rooms/{room}/files",
            user,
            content_type="multipart/form-data",
            data={"file": (io.BytesIO(b"notes"), "notes.txt", "text/plain")},
        ),
    }
    return {name: response.status_code for name, response in responses.items()}
