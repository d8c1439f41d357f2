"""Authorization headers of a fresh user per role, for the in-process API tests."""
from __future__ import annotations

import pytest

from tests.factories import auth_headers, make_user


@pytest.fixture
def admin(client):
    return auth_headers(client, make_user("admin"))


@pytest.fixture
def operator(client):
    return auth_headers(client, make_user("operator"))


@pytest.fixture
def viewer(client):
    return auth_headers(client, make_user("viewer"))
