"""One factory per model, and helpers to act as a user over HTTP."""
from __future__ import annotations

import itertools

from mcc.extensions import db

PASSWORD = "correct horse battery"
_counter = itertools.count(1)


def make_user(role: str = "operator", username: str | None = None, password: str = PASSWORD):
    from mcc.services.users import create_user

    user = create_user(username or f"{role}{next(_counter)}", password, role)
    db.session.commit()
    return user


def login(client, username: str, password: str = PASSWORD, **environ) -> dict:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password},
                           environ_base=environ)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def auth_headers(client, user) -> dict:
    tokens = login(client, user.username)
    return {"Authorization": f"Bearer {tokens['access_token']}"}
