"""What an adversarial probe sent with ordinary and admin keys (#25): no request id, text or admin
value gives a 5xx, on the Flask test client and on a real gunicorn; failed key checks are counted,
limited per client address (429 with Retry-After) and logged without the key; short keys are
refused at start."""

from __future__ import annotations

import pytest
import requests

from service.settings import ConfigError

from .conftest import API_KEY, AUTH, isolated_store, make_app
from .server import Server

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}

# (method, path, json body, extra headers, expected status): each a probe that once answered 500 or
# was read as something it is not.
PROBES = [
    ("POST", "/predict", {"text": "hi", "request_id": "abc\n"}, {}, 422),
    ("POST", "/v1/predict", {"text": "hi", "request_id": "abc\n"}, {}, 422),
    ("POST", "/v1/batch_predict", {"texts": ["hi"], "request_id": "abc\n"}, {}, 422),
    ("POST", "/v1/predict", {"text": "hi"}, {"X-Request-ID": "abc def"}, 422),
    ("POST", "/v1/feedback", {"request_id": "abc\n", "label": "toxic"}, {}, 400),  # its body contract
    ("POST", "/v1/feedback", {"items": [{"request_id": "abc\n", "label": "toxic"}]}, {}, 400),
    ("POST", "/v1/models/v1%0A/predict", {"text": "hi"}, {}, 404),
    ("GET", "/v1/models/v1%0A/quality", None, {}, 404),
    ("POST", "/v1/predict", {"text": "\ufdfa" * 2000}, {}, 422),  # 18 characters each once normalised
    ("PUT", "/admin/rollout", {"canary_percent": "50"}, ADMIN, 422),
    ("PUT", "/admin/rollout", {"canary_percent": True}, ADMIN, 422),
    ("PUT", "/admin/rollout", {"canary_percent": 10, "expected_revision": 1.5}, ADMIN, 422),
    ("PUT", "/admin/rollout", {"canary_percent": 10, "expected_revision": "1"}, ADMIN, 422),
    ("PUT", "/admin/rollout/plan", {"canary": "v2", "steps": ["10"]}, ADMIN, 422),
    ("PUT", "/admin/rollout/plan", {"canary": "v2", "guardrails": {"min_feedback": 2.5}}, ADMIN, 422),
    ("POST", "/admin/rollout/rollback", {"expected_revision": True}, ADMIN, 422),
]
IDS = [f"{method} {path} {body!r:.40} {headers}" for method, path, body, headers, _ in PROBES]


def probe_app():
    return make_app(ADMIN_KEYS=f"ops:{ADMIN_KEY}", STORE_URL=isolated_store())


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), PROBES, ids=IDS)
def test_a_probe_is_a_clear_4xx_on_the_test_client(method, path, body, headers, status):
    answer = probe_app().test_client().open(path, method=method, json=body, headers={**AUTH, **headers})
    assert answer.status_code == status, answer.get_data(as_text=True)
    if status >= 400:
        assert answer.json["error_code"] and answer.json["request_id"]


def test_minus_zero_is_stored_as_zero():
    client = probe_app().test_client()
    answer = client.put("/admin/rollout", json={"canary_percent": -0.0}, headers=ADMIN)
    assert answer.status_code == 200 and str(answer.json["canary_percent"]) == "0.0"


@pytest.mark.gunicorn
def test_no_probe_is_a_5xx_on_gunicorn():
    env = {
        "TOXISERVE_API_KEYS": f"tests:{API_KEY}",
        "TOXISERVE_ADMIN_KEYS": f"ops:{ADMIN_KEY}",
        "TOXISERVE_STORE_URL": isolated_store(),
        "TOXISERVE_RATE_LIMIT": "",
    }
    with Server(env) as server:
        got = {}
        for (method, path, body, headers, status), name in zip(PROBES, IDS, strict=True):
            answer = requests.request(method, server.url + path, json=body, headers={**AUTH, **headers}, timeout=30)
            got[name] = (answer.status_code, status)
        # Guessing keys, across both workers: the default 30 failed checks a minute, then 429.
        guesses = [
            requests.post(server.url + path, json={}, headers={"X-API-Key": f"guess-{n:016d}"}, timeout=30)
            for n, path in enumerate(["/v1/predict", "/admin/rollout/rollback"] * 20)
        ]
        scrape = requests.get(server.url + "/metrics", timeout=30).text
        output = server.output()
    assert {name: pair for name, pair in got.items() if pair[0] != pair[1]} == {}
    assert [g.status_code for g in guesses] == [401] * 30 + [429] * 10
    assert all(int(g.headers["Retry-After"]) >= 1 for g in guesses[30:])
    # Counted: the 30 checks that failed, and each worker's first check past the limit (which
    # blocks its address there); later refusals are made before any key is checked.
    assert 31 <= counter(scrape, "auth_failures_total") <= 32
    assert "Traceback" not in output and "guess-" not in output


def test_keys_shorter_than_16_characters_are_refused_at_start():
    with pytest.raises(ConfigError, match="at least 16 characters, this one has 5"):
        make_app(API_KEYS="short:abcde")
    with pytest.raises(ConfigError, match="TOXISERVE_ADMIN_KEYS entry 1"):
        make_app(ADMIN_KEYS="ops:too-short")
    with pytest.raises(ConfigError, match="TOXISERVE_ROUTING_KEY needs at least 16"):
        make_app(ROUTING_KEY="guessable")


def test_the_controllers_name_is_no_key_id():
    """An admin key named "controller" would have its rollout changes kept as automatic entries."""
    with pytest.raises(ConfigError, match="'controller' is reserved"):
        make_app(ADMIN_KEYS="controller:a-long-enough-admin-key")


def guess(client, path: str, address: str, key: str = "wrong-key-0123456789"):
    return client.post(path, json={"text": "hi"}, headers={"X-API-Key": key}, environ_base={"REMOTE_ADDR": address})


@pytest.mark.parametrize("path", ["/v1/predict", "/admin/rollout/rollback"])
def test_key_guessing_is_limited_per_address_and_counted(path, caplog):
    client = make_app(ADMIN_KEYS=f"ops:{ADMIN_KEY}", AUTH_FAILURE_LIMIT="5/minute").test_client()
    before = client.get("/metrics").get_data(as_text=True)
    statuses = [guess(client, path, "10.0.0.7").status_code for _ in range(7)]
    assert statuses == [401] * 5 + [429] * 2
    refused = guess(client, path, "10.0.0.7", key=ADMIN_KEY if path.startswith("/admin") else API_KEY)
    assert refused.status_code == 429 and refused.json["error_code"] == "RATE_LIMITED"  # even the right key
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert guess(client, path, "10.0.0.8").status_code == 401  # another address has its own budget
    after = client.get("/metrics").get_data(as_text=True)
    assert counter(after, "auth_failures_total") - counter(before, "auth_failures_total") == 7
    assert "wrong-key" not in caplog.text


def counter(exposition: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in exposition.splitlines() if line.startswith(name + " "))


def test_a_key_is_found_among_many_by_digest():
    from service.admission.auth import ApiKeys

    keys = ApiKeys.from_settings(",".join(f"k{i}:key-{i:012d}-abcdef" for i in range(20_000)), None)
    assert keys.identify("key-000000019999-abcdef") == "k19999"
    assert keys.identify("key-000000020000-abcdef") is None and keys.identify("") is None
