import hashlib

import pytest

from service import ConfigError, create_app
from service.core.lifecycle import begin_draining

from .conftest import isolated_store, make_app, post


def test_refuses_to_start_without_keys():
    with pytest.raises(ConfigError, match="no API keys configured"):
        create_app({"TESTING": True, "STORE_URL": isolated_store()})


def test_auth_disabled_serves_without_a_key():
    client = create_app({"AUTH_DISABLED": True, "STORE_URL": isolated_store()}).test_client()
    assert client.post("/v1/predict", json={"text": "hello"}).status_code == 200


def test_keys_file_holds_only_digests(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\nops:{hashlib.sha256(b'file-key-1').hexdigest()}\n")
    client = create_app({"API_KEYS_FILE": str(keys_file), "STORE_URL": isolated_store()}).test_client()
    assert client.post("/v1/predict", json={"text": "hi"}, headers={"X-API-Key": "file-key-1"}).status_code == 200
    assert client.post("/v1/predict", json={"text": "hi"}, headers={"X-API-Key": "file-key-2"}).status_code == 401


@pytest.mark.parametrize(
    "override, message",
    [
        ({"CANARY_PERCENT": 150}, "CANARY_PERCENT must be between"),
        ({"MAX_BATCH_SIZE": "many"}, "MAX_BATCH_SIZE must be a number"),
        ({"API_KEYS": "no-colon"}, "must be 'id:key'"),
        ({"ON_VERSION_MISMATCH": "ignore"}, "ON_VERSION_MISMATCH"),
        ({"API_KEYS_FILE": "/nonexistent/keys"}, "API_KEYS_FILE"),
    ],
)
def test_bad_config_fails_fast_with_a_clear_message(override, message):
    with pytest.raises(ConfigError, match=message):
        make_app(**override)


def test_model_dir_from_environment(monkeypatch, tiny_model_root):
    monkeypatch.setenv("TOXISERVE_MODEL_DIR", str(tiny_model_root))
    app = make_app()
    assert app.extensions["toxiserve"].inference.models["v1"].path.parent.parent == tiny_model_root


def test_max_batch_size_is_configurable():
    client = make_app(MAX_BATCH_SIZE=2).test_client()
    response = post(client, "/v1/batch_predict", {"texts": ["a b", "c d", "e f"]})
    assert response.status_code == 422 and "limit of 2" in response.json["message"]


def test_draining_fails_readiness_but_finishes_work():
    app = make_app()
    client = app.test_client()
    begin_draining(app)
    assert client.get("/readyz").status_code == 503 and client.get("/readyz").json == {"status": "draining"}
    assert client.get("/healthz").status_code == 200
    assert post(client, "/v1/predict", {"text": "still served"}).status_code == 200
