"""The published contract: /openapi.json must not change without the snapshot changing with it.

After an intended change: UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/service/test_openapi.py
"""

import json
import os
import re
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("openapi_snapshot.json")


def test_openapi_matches_snapshot(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    assert spec == json.loads(SNAPSHOT.read_text()), "the API contract changed: review, then UPDATE_SNAPSHOTS=1"


def test_openapi_documents_every_route_and_the_error_body(app, client):
    spec = client.get("/openapi.json").json
    documented = set(spec["paths"])
    served = {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
    }
    # The document and the Swagger UI that renders it are not API operations.
    assert served - {"/openapi.json", "/docs", "/docs/static/{name}"} == documented
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error_code", "message", "request_id"}
    predict = spec["paths"]["/v1/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictRequest"
    }
    assert {"400", "401", "408", "409", "413", "414", "415", "422", "429", "431", "503"} <= set(predict["responses"])
    assert "RATE_LIMITED" in predict["responses"]["429"]["description"]
    assert {"Retry-After", "X-RateLimit-Reset"} <= set(predict["responses"]["429"]["headers"])
    whole, per_item = spec["components"]["schemas"]["BatchPredictRequest"]["oneOf"]
    limits = whole["properties"]["texts"]
    assert (limits["minItems"], limits["maxItems"], limits["items"]["maxLength"]) == (1, 1000, 2000)
    assert whole["properties"]["on_error"]["enum"] == ["request"] and "pattern" in limits["items"]
    assert per_item["properties"]["on_error"]["enum"] == ["item"] and "on_error" in per_item["required"]
    assert "pattern" not in per_item["properties"]["texts"]["items"]  # any string: answered in its place
