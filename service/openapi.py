"""GET /openapi.json: the published contract, generated from the marshmallow schemas."""

from __future__ import annotations

import functools

from flask import Blueprint, jsonify

from . import schemas

bp = Blueprint("docs", __name__)

_ERROR = {"content": {"application/json": {"schema": "Error"}}}
_API_ERRORS = {
    "400": {"description": "INVALID_JSON, INVALID_PAYLOAD or EMPTY_BATCH", **_ERROR},
    "401": {"description": "UNAUTHORIZED", **_ERROR},
    "413": {"description": "PAYLOAD_TOO_LARGE", **_ERROR},
    "415": {"description": "UNSUPPORTED_MEDIA_TYPE", **_ERROR},
    "422": {"description": "UNPROCESSABLE: blank or too long text, batch too large, malformed request_id", **_ERROR},
    "503": {"description": "NOT_READY or INFERENCE_FAILED", **_ERROR},
}


def _post(summary: str, request_schema: str, response_schema: str) -> dict:
    return {
        "post": {
            "summary": summary,
            "security": [{"ApiKey": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}},
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": response_schema}}},
                **_API_ERRORS,
            },
        }
    }


@functools.cache
def build_spec() -> dict:
    # Imported here: apispec costs ~80 ms of start-up, and only this endpoint needs it.
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    spec = APISpec(title="toxiserve", version="1.0.0", openapi_version="3.0.3", plugins=[MarshmallowPlugin()])
    spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
    for name in (
        "PredictRequest",
        "BatchPredictRequest",
        "PredictResponse",
        "BatchPredictResponse",
        "Error",
        "Health",
        "Ready",
        "ModelsResponse",
        "DriftReport",
    ):
        spec.components.schema(name, schema=getattr(schemas, f"{name}Schema"))
    for version in ("v1", "v2"):
        spec.path(
            f"/{version}/predict",
            operations=_post(f"Score one text with model {version}", "PredictRequest", "PredictResponse"),
        )
        spec.path(
            f"/{version}/batch_predict",
            operations=_post(
                f"Score up to MAX_BATCH_SIZE texts with {version}", "BatchPredictRequest", "BatchPredictResponse"
            ),
        )
    spec.path(
        "/predict",
        operations=_post("Canary router: CANARY_PERCENT of request ids go to v2", "PredictRequest", "PredictResponse"),
    )
    spec.path(
        "/v1/models",
        operations={
            "get": {
                "summary": "Deployed models from their manifests",
                "security": [{"ApiKey": []}],
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": "ModelsResponse"}}},
                    "401": _API_ERRORS["401"],
                },
            }
        },
    )
    spec.path(
        "/v1/models/{version}/drift",
        operations={
            "get": {
                "summary": "Population stability index of live traffic against the model's training profile",
                "security": [{"ApiKey": []}],
                "parameters": [{"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": "DriftReport"}}},
                    "401": _API_ERRORS["401"],
                    "404": {"description": "NOT_FOUND", **_ERROR},
                },
            }
        },
    )
    spec.path(
        "/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics, summed over workers (bearer token if TOXISERVE_METRICS_TOKEN is set)",
                "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
            }
        },
    )
    # Open Inference Protocol (KServe V2): documented here by reference; its errors are {"error", "error_code"}.
    oip_ref = "Open Inference Protocol REST, kserve/open-inference-protocol specification/protocol/inference_rest.md"
    oip_json = {"content": {"application/json": {"schema": {"type": "object"}}}}
    for path, method, summary in (
        ("/v2/health/live", "get", "OIP server live"),
        ("/v2/health/ready", "get", "OIP server ready"),
        ("/v2", "get", "OIP server metadata"),
        ("/v2/models/{model_name}", "get", "OIP model metadata (all versions)"),
        ("/v2/models/{model_name}/versions/{version}", "get", "OIP model metadata (one version)"),
        ("/v2/models/{model_name}/ready", "get", "OIP model ready"),
        ("/v2/models/{model_name}/versions/{version}/ready", "get", "OIP model version ready"),
        ("/v2/models/{model_name}/infer", "post", "OIP inference through the canary router (API key)"),
        ("/v2/models/{model_name}/versions/{version}/infer", "post", "OIP inference with one version (API key)"),
    ):
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("model_name", "version")
            if "{" + name + "}" in path
        ]
        operation = {
            "summary": summary,
            "description": oip_ref,
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK", **oip_json},
                "4XX": {"description": 'OIP error {"error", "error_code"}', **oip_json},
            },
        }
        if method == "post":
            operation["requestBody"] = {"required": True, **oip_json}
            operation["security"] = [{"ApiKey": []}]
        spec.path(path, operations={method: operation})
    spec.path(
        "/healthz",
        operations={
            "get": {
                "summary": "Liveness",
                "responses": {
                    "200": {"description": "process is up", "content": {"application/json": {"schema": "Health"}}}
                },
            }
        },
    )
    spec.path(
        "/readyz",
        operations={
            "get": {
                "summary": "Readiness",
                "responses": {
                    "200": {"description": "ready", "content": {"application/json": {"schema": "Ready"}}},
                    "503": {
                        "description": "starting or draining",
                        "content": {"application/json": {"schema": "Ready"}},
                    },
                },
            }
        },
    )
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_spec())
