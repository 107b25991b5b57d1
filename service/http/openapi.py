"""GET /openapi.json and /docs: the published contract, generated from the schemas and the error classes.

Each operation names the error classes it can raise; their statuses, error codes and retry headers
become its documented responses, so the document cannot forget one. The limits in the request
schemas (text length, batch size, the request-id pattern) are this process's settings. /docs
serves a Swagger UI from the packaged `swagger-ui-bundle`: no network at run time.
"""

from __future__ import annotations

import functools
from collections import defaultdict, namedtuple
from pathlib import Path

from flask import Blueprint, current_app, jsonify, send_from_directory

from service import errors
from service.core import schemas
from service.request_context import REQUEST_ID_SCHEMA_PATTERN
from service.rollout.feedback import FeedbackConflictError, UnknownRequestError
from service.rollout.plan import PlanRunningError
from service.rollout.state import InvalidRolloutError, RevisionConflictError
from service.store import StoreUnavailableError
from shared_features.errors import UnprocessableError
from shared_features.text import VISIBLE_CHARACTER

bp = Blueprint("docs", __name__)
_Limits = namedtuple("_Limits", "max_text_chars max_batch_size max_content_length model_name versions")

# What any request can get from the gunicorn worker before the app sees it.
WORKER = (
    errors.MalformedRequestError,
    errors.RequestTimeoutError,
    errors.PayloadTooLargeError,
    errors.UriTooLongError,
    errors.ExpectationFailedError,
    errors.HeadersTooLargeError,
    errors.TransferCodingError,
    errors.MethodNotAllowedError,
)
SCORING = (
    errors.InvalidJsonError,
    errors.InvalidPayloadError,
    errors.UnauthorizedError,
    errors.IdempotencyConflictError,
    errors.UnsupportedMediaTypeError,
    UnprocessableError,
    errors.RateLimitedError,
    errors.NotReadyError,
    errors.InferenceFailedError,
    errors.DeadlineExceededError,
    errors.OverloadedError,
    StoreUnavailableError,
)
RETRY_HINTED = {429: "always", 503: "when retrying soon may succeed", 409: "while the first request is still running"}
# A 200 whose body is a JSON object documented in prose (OIP metadata, shadow and quality reports).
JSON_OBJECT_OK = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def _header(description: str, kind: str = "string") -> dict:
    return {"description": description, "schema": {"type": kind}}


def _responses(ok: dict, raised: tuple, error_schema: str = "Error") -> dict:
    """200 plus one response per status the raised classes have, listing their error codes."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for error_class in (*raised, *WORKER):
        if error_class.error_code not in by_status[error_class.status]:
            by_status[error_class.status].append(error_class.error_code)
    responses = {"200": ok}
    for status, codes in sorted(by_status.items()):
        headers = {"X-Request-ID": _header("the client's X-Request-ID as it came, else the request id")}
        if status in RETRY_HINTED:
            headers["Retry-After"] = _header(f"seconds to wait before retrying ({RETRY_HINTED[status]})", "integer")
        if status == 405:
            headers["Allow"] = _header("the methods this path takes")
        if status == 429:
            headers |= {name: _header("the key's rate limit (texts)", "integer") for name in RATE_LIMIT_HEADERS}
        responses[str(status)] = {
            "description": "error_code: " + ", ".join(codes),
            "headers": headers,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{error_schema}"}}},
        }
    return responses


def _json(schema: str) -> dict:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _ok(schema: str, description: str = "OK", rate_limited: bool = False) -> dict:
    ok = {"description": description, **_json(schema)}
    if rate_limited:
        ok["headers"] = {name: _header("the key's rate limit (texts)", "integer") for name in RATE_LIMIT_HEADERS}
    return ok


def _path_parameters(path: str, settings) -> list[dict]:
    """The path's model name and version, as the values this process serves (others are 404)."""
    served = {"model_name": [settings.model_name], "version": list(settings.versions)}
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "enum": served[name]}}
        for name in ("model_name", "version")
        if "{" + name + "}" in path
    ]


def _id_headers() -> list[dict]:
    """The two request ids a scoring call may carry, kept apart (service.request_context)."""
    schema = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": REQUEST_ID_SCHEMA_PATTERN}
    described = {
        "X-Request-ID": "a correlation id: echoed as it came and logged, never deduplicated",
        "Idempotency-Key": "deduplicates, like the body's request_id (which wins when both are sent): "
        "a retry is answered from the first answer, another payload under it is 409",
    }
    return [
        {"name": name, "in": "header", "required": False, "description": text, "schema": schema}
        for name, text in described.items()
    ]


def _scoring(summary: str, request: str, response: str, raised: tuple, error_schema: str = "Error") -> dict:
    return {
        "post": {
            "summary": summary,
            "security": [{"ApiKey": []}],
            "parameters": _id_headers(),
            "requestBody": {"required": True, **_json(request)},
            "responses": _responses(_ok(response, rate_limited=True), raised, error_schema),
        }
    }


def _limits(spec: dict, settings) -> None:
    """The limits this process enforces, in the request schemas."""
    components = spec["components"]["schemas"]
    request_id = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": REQUEST_ID_SCHEMA_PATTERN}
    # The server's blank rule, stated: at least one character that is not white space or an
    # invisible format character (the pattern is a search, so it asks for one anywhere).
    text = {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.max_text_chars,
        "pattern": VISIBLE_CHARACTER,
        "description": "Raw text with at least one visible character: one of only white space or invisible "
        "format characters is blank, refused with 422 UNPROCESSABLE.",
    }
    any_text = {"type": "string", "description": "Raw text; an unusable one is answered in its place."}
    components["PredictRequest"]["properties"].update(text=text, request_id=request_id)
    # Two shapes, so the document says which texts each accepts: the default refuses the batch for
    # one unusable text; "on_error": "item" answers it in its place, so any string is accepted there.
    batch = components.pop("BatchPredictRequest")
    texts = {"type": "array", "minItems": 1, "maxItems": settings.max_batch_size}
    whole = batch["properties"]["on_error"]
    per_item = {name: value for name, value in whole.items() if name != "default"}
    components["BatchPredictRequest"] = {
        "oneOf": [
            {
                **batch,
                "properties": {
                    "texts": {**texts, "items": text},
                    "on_error": {**whole, "enum": ["request"]},
                    "request_id": request_id,
                },
                "additionalProperties": False,
            },
            {
                **batch,
                "properties": {
                    "texts": {**texts, "items": any_text},
                    "on_error": {**per_item, "enum": ["item"]},
                    "request_id": request_id,
                },
                "required": ["on_error", "texts"],
                "additionalProperties": False,
            },
        ]
    }
    infer = components["InferRequest"]["properties"]
    infer["id"] = request_id
    infer["inputs"].update(minItems=1, maxItems=1)
    tensor = components["Tensor"]["properties"]
    tensor["shape"].update(
        minItems=1, maxItems=2, items={"type": "integer", "minimum": 1, "maximum": settings.max_batch_size}
    )
    tensor["data"] = {
        "type": "array",
        "items": text,
        "minItems": 1,
        "maxItems": settings.max_batch_size,
        "description": "N texts for shape [N] (or [[t1], [t2], ...] for [N, 1])",
    }
    tensor["name"]["enum"] = ["text"]
    tensor["datatype"]["enum"] = ["BYTES"]
    components["PredictRequest"]["additionalProperties"] = False
    # With "on_error": "item", an unusable text's place in `results` holds its error instead.
    results = components["BatchPredictResponse"]["properties"]["results"]
    results["items"] = {"oneOf": [results["items"], {"$ref": "#/components/schemas/BatchItemError"}]}


ADMIN_READ = (errors.UnauthorizedError, errors.ForbiddenError, errors.RateLimitedError, StoreUnavailableError)
ADMIN_WRITE = (
    *ADMIN_READ,
    errors.InvalidJsonError,
    errors.InvalidPayloadError,
    errors.UnsupportedMediaTypeError,
    RevisionConflictError,
    InvalidRolloutError,
)


def _admin_paths(spec) -> None:
    """The admin API: an admin key (TOXISERVE_ADMIN_KEYS); a prediction key gets 403."""

    def operation(summary: str, ok: str, raised: tuple, body: str | None = None, required: bool = False) -> dict:
        described = {
            "summary": summary,
            "tags": ["admin"],
            "security": [{"ApiKey": []}],
            "responses": _responses(_ok(ok), raised),
        }
        if body:
            described["requestBody"] = {"required": required, **_json(body)}
        return described

    spec.path(
        "/admin/rollout",
        operations={
            "get": operation("The rollout state", "RolloutState", ADMIN_READ),
            "put": operation(
                "Change part of the rollout (compare-and-set with expected_revision)",
                "RolloutState",
                ADMIN_WRITE,
                "RolloutChange",
                required=True,
            ),
        },
    )
    for action, summary in (
        ("promote", "The canary becomes stable (100 %); the old stable stays named as canary at 0 %"),
        ("rollback", "Canary share to 0 %; the canary stays named"),
    ):
        spec.path(
            f"/admin/rollout/{action}",
            operations={"post": operation(summary, "RolloutState", ADMIN_WRITE, "RolloutAction")},
        )
    spec.path(
        "/admin/rollout/reset",
        operations={
            "post": operation(
                "Re-seed the rollout from the settings (TOXISERVE_STABLE_VERSION, _CANARY_VERSION, _CANARY_PERCENT)",
                "RolloutState",
                ADMIN_WRITE,
                "RolloutReset",
                required=True,
            )
        },
    )
    spec.path(
        "/admin/rollout/plan",
        operations={
            "get": operation(
                "The rollout plan: status, current step, each guardrail's value against its bound",
                "RolloutPlan",
                (*ADMIN_READ, errors.NotFoundError),
            ),
            "put": operation(
                "Start an automatic rollout plan (409 PLAN_RUNNING while one runs)",
                "RolloutPlan",
                (*ADMIN_WRITE, PlanRunningError),
                "RolloutPlanRequest",
                required=True,
            ),
            "delete": operation(
                "Abort the running plan and roll back (canary share 0 %)",
                "RolloutPlan",
                (*ADMIN_WRITE, errors.NotFoundError),
                "RolloutAction",
            ),
        },
    )
    spec.path(
        "/admin/rollout/history",
        operations={
            "get": {
                **operation(
                    "Every change, newest first; a controller's holds fold into one entry per step",
                    "RolloutHistory",
                    (*ADMIN_READ, UnprocessableError),
                ),
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "required": False,
                        "description": "page back: entries older than the one with this id (`next_before`)",
                        "schema": {"type": "integer", "minimum": 1},
                    },
                ],
            }
        },
    )
    spec.path(
        "/admin/rollout/shadow",
        operations={
            "get": {
                "summary": "Shadow agreement and score difference per (primary, shadow) pair",
                "tags": ["admin"],
                "security": [{"ApiKey": []}],
                "responses": _responses(JSON_OBJECT_OK, ADMIN_READ),
            }
        },
    )


FEEDBACK_ERRORS = (
    errors.InvalidJsonError,
    errors.InvalidPayloadError,
    errors.UnauthorizedError,
    errors.UnsupportedMediaTypeError,
    UnprocessableError,
    UnknownRequestError,
    FeedbackConflictError,
    errors.RateLimitedError,
    StoreUnavailableError,
)


def _feedback_paths(spec, settings) -> None:
    accepted = {
        "description": "accepted (one label) or a result per item (a batch)",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/FeedbackResult"},
                        {"$ref": "#/components/schemas/FeedbackBatchResult"},
                    ]
                }
            }
        },
    }
    responses = _responses(_ok("FeedbackResult"), FEEDBACK_ERRORS)
    del responses["200"]
    body = {"oneOf": [{"$ref": "#/components/schemas/FeedbackItem"}, {"$ref": "#/components/schemas/FeedbackBatch"}]}
    spec.path(
        "/v1/feedback",
        operations={
            "post": {
                "summary": "Label an answered request (sent with a request_id, by the same key); first label stands",
                "security": [{"ApiKey": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                "responses": {"202": accepted, **responses},
            }
        },
    )
    spec.path(
        "/v1/models/{version}/quality",
        operations={
            "get": {
                "summary": "Precision, recall, F1, macro-F1 and accuracy from feedback, with 95 % intervals",
                "security": [{"ApiKey": []}],
                "parameters": _path_parameters("{version}", settings),
                "responses": _responses(
                    JSON_OBJECT_OK, (errors.UnauthorizedError, errors.NotFoundError, StoreUnavailableError)
                ),
            }
        },
    )


@functools.cache
def _build(limits: tuple[int, int, int]) -> dict:
    settings = _Limits(*limits)
    # Imported here: apispec costs ~80 ms of start-up, and only this endpoint needs it.
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    spec = APISpec(
        title="toxiserve",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": f"Request bodies are at most {settings.max_content_length} bytes (413 beyond)."},
    )
    spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
    for name in (
        "PredictRequest",
        "BatchPredictRequest",
        "PredictResponse",
        "BatchPredictResponse",
        "BatchItemError",
        "Error",
        "OipError",
        "Health",
        "Ready",
        "ModelsResponse",
        "DriftReport",
        "InferRequest",
        "InferResponse",
        "RolloutState",
        "RolloutChange",
        "RolloutAction",
        "RolloutReset",
        "RolloutHistory",
        "RolloutPlanRequest",
        "RolloutPlan",
        "FeedbackItem",
        "FeedbackBatch",
        "FeedbackResult",
        "FeedbackBatchResult",
    ):
        spec.components.schema(name, schema=getattr(schemas, f"{name}Schema"))
    batch_errors = (*SCORING, errors.EmptyBatchError)
    replay = {
        "ReplayWithTheSameId": {"operationId": "predict", "requestBody": {"request_id": "$response.body#/request_id"}}
    }
    for version in ("v1", "v2"):
        spec.path(
            f"/{version}/predict",
            operations=_scoring(f"Score one text with model {version}", "PredictRequest", "PredictResponse", SCORING),
        )
        spec.path(
            f"/{version}/batch_predict",
            operations=_scoring(
                f"Score 1 to {settings.max_batch_size} texts with {version}",
                "BatchPredictRequest",
                "BatchPredictResponse",
                batch_errors,
            ),
        )
    router = _scoring(
        "Canary router: CANARY_PERCENT of request ids go to the canary", "PredictRequest", "PredictResponse", SCORING
    )
    router["post"]["operationId"] = "predict"
    router["post"]["responses"]["200"]["links"] = replay  # the stateful phase: the same id again is a replay
    spec.path("/predict", operations=router)
    read_only = (errors.UnauthorizedError, errors.NotReadyError)
    spec.path(
        "/v1/models",
        operations={
            "get": {
                "summary": "Deployed models from their manifests",
                "security": [{"ApiKey": []}],
                "responses": _responses(_ok("ModelsResponse"), read_only),
            }
        },
    )
    spec.path(
        "/v1/models/{version}/drift",
        operations={
            "get": {
                "summary": "Population stability index of live traffic against the model's training profile",
                "security": [{"ApiKey": []}],
                "parameters": _path_parameters("{version}", settings),
                "responses": _responses(_ok("DriftReport"), (*read_only, errors.NotFoundError)),
            }
        },
    )
    for path, summary, request, response, raised in (
        (
            "/v1/models/{version}/predict",
            "Score one text with this model version (any version the rollout names; 404 otherwise)",
            "PredictRequest",
            "PredictResponse",
            SCORING,
        ),
        (
            "/v1/models/{version}/batch_predict",
            f"Score 1 to {settings.max_batch_size} texts with this model version",
            "BatchPredictRequest",
            "BatchPredictResponse",
            batch_errors,
        ),
    ):
        operation = _scoring(summary, request, response, (*raised, errors.NotFoundError))
        operation["post"]["parameters"] += _path_parameters(path, settings)
        spec.path(path, operations=operation)
    oip_infer_errors = (*batch_errors, errors.NotFoundError)
    for path, summary in (
        ("/v2/models/{model_name}/infer", "OIP inference through the canary router"),
        ("/v2/models/{model_name}/versions/{version}/infer", "OIP inference with one model version"),
    ):
        operation = _scoring(summary, "InferRequest", "InferResponse", oip_infer_errors, "OipError")
        operation["post"]["parameters"] += _path_parameters(path, settings)
        operation["post"]["description"] = (
            "Open Inference Protocol (kserve/open-inference-protocol, inference_rest.md) with the binary tensor data "
            "extension: a body of JSON then raw tensors, split by the Inference-Header-Content-Length header."
        )
        spec.path(path, operations=operation)
    oip_json = JSON_OBJECT_OK
    for path, summary in (
        ("/v2/health/live", "OIP server live"),
        ("/v2", "OIP server metadata and extensions"),
        ("/v2/models/{model_name}", "OIP model metadata (all versions)"),
        ("/v2/models/{model_name}/versions/{version}", "OIP model metadata (one version)"),
    ):
        raised = (errors.NotFoundError, errors.NotReadyError) if "{" in path else ()
        operation = {
            "summary": summary,
            "parameters": _path_parameters(path, settings),
            "responses": _responses(oip_json, raised, "OipError"),
        }
        spec.path(path, operations={"get": operation})
    for path, summary in (
        ("/v2/health/ready", "OIP server ready (503 while not)"),
        ("/v2/models/{model_name}/ready", "OIP model ready (503 while not)"),
        ("/v2/models/{model_name}/versions/{version}/ready", "OIP model version ready (503 while not)"),
    ):
        responses = _responses(oip_json, (errors.NotFoundError,) if "{" in path else (), "OipError")
        responses["503"] = {"description": "not ready", "content": oip_json["content"]}
        spec.path(
            path,
            operations={
                "get": {"summary": summary, "parameters": _path_parameters(path, settings), "responses": responses}
            },
        )
    _admin_paths(spec)
    _feedback_paths(spec, settings)
    spec.path(
        "/healthz",
        operations={"get": {"summary": "Liveness", "responses": _responses(_ok("Health", "process is up"), ())}},
    )
    ready = _responses(_ok("Ready", "ready"), ())
    ready["503"] = {"description": "starting, draining, or the store is down while failing closed", **_json("Ready")}
    spec.path("/readyz", operations={"get": {"summary": "Readiness", "responses": ready}})
    metrics_ok = {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
    spec.path(
        "/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics, summed over workers",
                "responses": _responses(metrics_ok, (errors.UnauthorizedError,)),
            }
        },
    )
    document = spec.to_dict()
    _limits(document, settings)
    return document


def build_spec(settings=None) -> dict:
    if settings is None:
        settings = current_app.extensions["toxiserve"].settings
    # Any version in the model directory can be named by the rollout and served by name.
    from shared_features.registry import ModelRegistry

    versions = tuple(ModelRegistry(settings.model_dir).versions(settings.model_name)) or ("v1",)
    return _build(
        (settings.max_text_chars, settings.max_batch_size, settings.max_content_length, settings.model_name, versions)
    )


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_spec())


_SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>toxiserve API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>"""


@bp.get("/docs")
def docs_page():
    return _SWAGGER_PAGE, 200, {"Content-Type": "text/html; charset=utf-8"}


@bp.get("/docs/static/<path:name>")
def docs_static(name: str):
    from swagger_ui_bundle import swagger_ui_path  # packaged assets: no network at run time

    return send_from_directory(Path(swagger_ui_path), name)
