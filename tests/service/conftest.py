"""Service fixtures: an app on the shipped models, its test client, and helpers."""

from __future__ import annotations

import pytest

from service import create_app

API_KEY = "test-key-0123456789"
OTHER_KEY = "other-key-9876543210"
AUTH = {"X-API-Key": API_KEY}


def make_app(**overrides):
    config = {"TESTING": True, "API_KEYS": f"tests:{API_KEY},other:{OTHER_KEY}", **overrides}
    return create_app(config)


@pytest.fixture(scope="session")
def app():
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, path: str, body=None, headers=None, **kwargs):
    return client.post(path, json=body, headers={**AUTH, **(headers or {})}, **kwargs)
