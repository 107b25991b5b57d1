"""Service fixtures: an app on the shipped models, its test client, and helpers."""

from __future__ import annotations

import tempfile
from types import MappingProxyType

import pytest

from service import create_app

API_KEY = "test-key-0123456789"
TEST_ROUTING_KEY = "tests-routing-key-0123456789abcdef"
OTHER_KEY = "other-key-9876543210"
# Read-only: a test (or a library it calls) that added to it would send its headers in every later test.
AUTH = MappingProxyType({"X-API-Key": API_KEY})


def isolated_store() -> str:
    return f"sqlite:///{tempfile.mkdtemp(prefix='toxiserve-store-')}/store.sqlite3"


def make_app(**overrides):
    """An app on the shipped models with its own embedded store and, unless asked, no rate limit."""
    config = {
        "TESTING": True,
        "API_KEYS": f"tests:{API_KEY},other:{OTHER_KEY}",
        "STORE_URL": isolated_store(),
        "RATE_LIMIT": "",
        "ROUTING_KEY": TEST_ROUTING_KEY,  # the same split of the same ids on every run
        **overrides,
    }
    return create_app(config)


@pytest.fixture(scope="session")
def app():
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, path: str, body=None, headers=None, **kwargs):
    return client.post(path, json=body, headers={**AUTH, **(headers or {})}, **kwargs)


REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_reachable() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request) -> str:
    """Both real backends; Redis tests skip when no server answers on 127.0.0.1:6379."""
    if request.param == "sqlite":
        return isolated_store()
    if not redis_reachable():
        pytest.skip(f"no Redis reachable at {REDIS_URL} (.ci/run starts redis-server when it is installed)")
    return REDIS_URL


@pytest.fixture
def namespace() -> str:
    """A fresh key prefix per test, so runs never see each other's counters or ids in a shared Redis."""
    import uuid

    return f"test-{uuid.uuid4().hex[:12]}"
