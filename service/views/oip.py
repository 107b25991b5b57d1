"""Open Inference Protocol (KServe V2) REST endpoints, beside /v2/predict and /v2/batch_predict.

Spec: kserve/open-inference-protocol, specification/protocol/inference_rest.md. Errors take the
spec's shape {"error": "..."} (with our error_code and request_id as extra fields). The OIP `id`
is the request id: it gets the same idempotency as everywhere else.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from marshmallow import Schema, ValidationError, fields

from shared_features.errors import ToxiserveError

from ..errors import EmptyBatchError, InvalidPayloadError, NotFoundError, error_response
from ..readiness import READY
from ..request_context import adopt_request_id
from .common import admit, authenticate, idempotent, load_body, state

bp = Blueprint("oip", __name__, url_prefix="/v2")
PLATFORM = "scikit-learn"
INPUTS = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
OUTPUTS = [{"name": "score", "datatype": "FP64", "shape": [-1]}, {"name": "label", "datatype": "BYTES", "shape": [-1]}]
PROTECTED = frozenset({"oip.infer", "oip.infer_version"})


class _TensorSchema(Schema):
    name = fields.String(required=True)
    shape = fields.List(fields.Integer(), required=True)
    datatype = fields.String(required=True)
    data = fields.Raw(required=True)
    parameters = fields.Dict()


class _OutputSchema(Schema):
    name = fields.String(required=True)
    parameters = fields.Dict()


class InferRequestSchema(Schema):
    id = fields.String()
    parameters = fields.Dict()
    inputs = fields.List(fields.Nested(_TensorSchema), required=True)
    outputs = fields.List(fields.Nested(_OutputSchema))


_infer_schema = InferRequestSchema()


@bp.before_request
def guard():
    if request.endpoint in PROTECTED:
        authenticate()


@bp.errorhandler(ToxiserveError)
def oip_error(error: ToxiserveError):
    response = error_response(error)
    body = response.get_json()
    body["error"] = body.pop("message")
    response.set_data(jsonify(body).get_data())
    return response


@bp.errorhandler(ValidationError)
def oip_validation_error(error: ValidationError):
    return oip_error(InvalidPayloadError(f"invalid inference request: {error.messages}", details=error.messages))


def _model_name_checked(model_name: str) -> None:
    if model_name != state().settings.model_name:
        raise NotFoundError(f"no model named {model_name!r}")


def _metadata(versions: list[str]) -> dict:
    return {
        "name": state().settings.model_name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }


@bp.get("/health/live")
def live():
    return jsonify(live=True)


@bp.get("/health/ready")
def ready():
    is_ready = state().readiness.state == READY
    return jsonify(ready=is_ready, live=True), 200 if is_ready else 503


@bp.get("")
def server_metadata():
    from importlib.metadata import PackageNotFoundError, version

    try:
        server_version = version("toxiserve")
    except PackageNotFoundError:
        server_version = "unknown"
    return jsonify(name="toxiserve", version=server_version, extensions=[])


@bp.get("/models/<model_name>")
def model_metadata(model_name: str):
    _model_name_checked(model_name)
    return jsonify(_metadata(list(state().inference.models)))


@bp.get("/models/<model_name>/versions/<version>")
def model_version_metadata(model_name: str, version: str):
    _model_name_checked(model_name)
    state().inference.model(version)
    return jsonify(_metadata([version]))


@bp.get("/models/<model_name>/ready")
@bp.get("/models/<model_name>/versions/<version>/ready")
def model_ready(model_name: str, version: str | None = None):
    _model_name_checked(model_name)
    service = state()
    if version is not None:
        service.inference.model(version)
    is_ready = service.readiness.state == READY
    return jsonify(name=model_name, ready=is_ready), 200 if is_ready else 503


def _texts(body: dict) -> list[str]:
    """The one input, `text`: BYTES, shape [N] or [N, 1], N strings."""
    inputs = body["inputs"]
    if len(inputs) != 1 or inputs[0]["name"] != "text":
        raise InvalidPayloadError("expected exactly one input, named 'text'", details={"inputs": ["text only"]})
    tensor = inputs[0]
    if tensor["datatype"] != "BYTES":
        raise InvalidPayloadError("input 'text' must have datatype BYTES", details={"inputs": ["datatype"]})
    shape, data = tensor["shape"], tensor["data"]
    if len(shape) == 2 and shape[1] == 1 and isinstance(data, list) and all(isinstance(r, list) for r in data):
        data = [row[0] if len(row) == 1 else row for row in data]  # [[t1], [t2]] is shape [N, 1] too
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise InvalidPayloadError(
            f"input 'text' must have shape [N] or [N, 1], got {shape}", details={"inputs": ["shape"]}
        )
    if not isinstance(data, list) or len(data) != shape[0] or not all(isinstance(t, str) for t in data):
        raise InvalidPayloadError(
            f"input 'text' must hold {shape[0]} strings, as its shape says", details={"inputs": ["data"]}
        )
    if not data:
        raise EmptyBatchError("input 'text' is empty")
    return data


def _infer(model_name: str, version: str | None):
    _model_name_checked(model_name)
    body = load_body(_infer_schema)
    request_id = adopt_request_id(body.get("id"))
    texts = _texts(body)
    wanted = [o["name"] for o in body.get("outputs") or []] or ["score", "label"]
    unknown = set(wanted) - {"score", "label"}
    if unknown:
        raise InvalidPayloadError(f"unknown outputs {sorted(unknown)}; this model has 'score' and 'label'")
    g.text_count = len(texts)
    service = state()
    deadline = admit(len(texts))

    def compute() -> dict:
        chosen = version or service.route(request_id)[0]
        predictions = service.inference.predict_batch(texts, chosen, deadline)
        tensors = {
            "score": {
                "name": "score",
                "datatype": "FP64",
                "shape": [len(texts)],
                "data": [p.score for p in predictions],
            },
            "label": {
                "name": "label",
                "datatype": "BYTES",
                "shape": [len(texts)],
                "data": [p.label for p in predictions],
            },
        }
        return {
            "model_name": model_name,
            "model_version": chosen,
            "id": request_id,
            "outputs": [tensors[name] for name in wanted],
        }

    response = idempotent(request_id, {"inputs": texts, "outputs": wanted, "version": version}, compute)
    g.model_version = response["model_version"]
    return jsonify(response)


@bp.post("/models/<model_name>/infer")
def infer(model_name: str):
    return _infer(model_name, None)


@bp.post("/models/<model_name>/versions/<version>/infer")
def infer_version(model_name: str, version: str):
    return _infer(model_name, version)
