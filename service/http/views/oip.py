"""Open Inference Protocol (KServe V2) REST endpoints, beside /v2/predict and /v2/batch_predict.

Spec: kserve/open-inference-protocol, specification/protocol/inference_rest.md, with the binary
tensor data extension that tritonclient uses by default: `Inference-Header-Content-Length` splits a
body into its JSON header and raw tensors, `binary_data_size` sizes an input or output, and
`binary_data` / `binary_data_output` ask for binary outputs. Bodies come as application/json,
application/octet-stream, or with no Content-Type at all. Errors take the spec's shape
{"error": "..."} (with our error_code and request_id beside it). The OIP `id` is the request id,
only echoed (the spec gives it no other meaning); an `Idempotency-Key` header deduplicates.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from marshmallow import ValidationError

from service.core.oip_tensors import (
    EXTENSIONS,
    INPUT,
    check_input,
    decode_bytes_elements,
    detail_for,
    infer_answer,
    invalid,
    json_texts,
    outputs_metadata,
    raw_output,
    wanted_outputs,
)
from service.core.readiness import READY
from service.core.schemas import InferRequestSchema
from service.errors import (
    InvalidJsonError,
    InvalidPayloadError,
    NotFoundError,
    UnsupportedMediaTypeError,
    error_response,
)
from service.http.views.common import authenticate, call, client_gone, dataplane, parse_json, read_body, state
from service.request_context import adopt_request_id
from shared_features.errors import ToxiserveError

bp = Blueprint("oip", __name__, url_prefix="/v2")
PLATFORM = "scikit-learn"
HEADER_LENGTH = "Inference-Header-Content-Length"
BODY_TYPES = ("", "application/json", "application/octet-stream")
PROTECTED = frozenset({"oip.infer", "oip.infer_version"})


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
    inference = dataplane().inference()
    return {
        "name": state().settings.model_name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [INPUT],
        "outputs": outputs_metadata([list(inference.model(version).categories) for version in versions]),
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
    return jsonify(name="toxiserve", version=server_version, extensions=EXTENSIONS)


@bp.get("/models/<model_name>")
def model_metadata(model_name: str):
    _model_name_checked(model_name)
    return jsonify(_metadata(list(dataplane().inference().models)))


@bp.get("/models/<model_name>/versions/<version>")
def model_version_metadata(model_name: str, version: str):
    _model_name_checked(model_name)
    dataplane().inference().model(version)
    return jsonify(_metadata([version]))


@bp.get("/models/<model_name>/ready")
@bp.get("/models/<model_name>/versions/<version>/ready")
def model_ready(model_name: str, version: str | None = None):
    _model_name_checked(model_name)
    service = state()
    if version is not None:
        dataplane().inference().model(version)
    is_ready = service.readiness.state == READY
    return jsonify(name=model_name, ready=is_ready), 200 if is_ready else 503


def _request() -> tuple[dict, bytes]:
    """The inference request's JSON header and the raw tensor bytes after it (if any)."""
    if request.mimetype not in BODY_TYPES:
        raise UnsupportedMediaTypeError("Content-Type must be application/json, application/octet-stream or absent")
    raw = read_body()
    declared = request.headers.get(HEADER_LENGTH)
    if declared is None:
        header, binary = raw, b""
    else:
        if not declared.isdigit() or int(declared) > len(raw):
            raise InvalidJsonError(f"{HEADER_LENGTH} must be a byte count within the body ({len(raw)} bytes)")
        header, binary = raw[: int(declared)], raw[int(declared) :]
    body = parse_json(header)
    if not isinstance(body, dict):
        raise InvalidPayloadError("an inference request is a JSON object", details={"_schema": ["object expected"]})
    return _infer_schema.load(body), binary


def _texts(body: dict, binary: bytes) -> list[str]:
    """The one input, `text`: N strings, as JSON `data` or as binary after the JSON header."""
    inputs = body["inputs"]
    if len(inputs) != 1:
        raise invalid("expected exactly one input, named 'text'")
    tensor = inputs[0]
    count = check_input(tensor["name"], tensor["datatype"], tensor["shape"])
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is None:
        if binary:
            raise invalid(f"{len(binary)} bytes of binary data, but no input has binary_data_size")
        if "data" not in tensor:
            raise invalid("input 'text' has neither data nor binary_data_size")
        return json_texts(tensor["data"], count)
    if "data" in tensor:
        raise invalid("input 'text' has both data and binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
        raise invalid(
            f"input 'text' declares binary_data_size {size!r}; the body holds {len(binary)} bytes after the header"
        )
    return decode_bytes_elements(binary, count)


def _binary_outputs(body: dict, names: list[str]) -> set[str]:
    if (body.get("parameters") or {}).get("binary_data_output"):
        return set(names)
    return {o["name"] for o in body.get("outputs") or [] if (o.get("parameters") or {}).get("binary_data")}


def _render(answer: dict, names: list[str], binary: set[str]) -> Response:
    """The stored answer as this request asked for it: its outputs, JSON or binary."""
    outputs, blobs = [], []
    for tensor in (t for name in names for t in answer["outputs"] if t["name"] == name):
        if tensor["name"] in binary:
            blob = raw_output(tensor)
            blobs.append(blob)
            parameters = {**tensor.get("parameters", {}), "binary_data_size": len(blob)}
            tensor = {k: v for k, v in tensor.items() if k != "data"} | {"parameters": parameters}
        outputs.append(tensor)
    header = jsonify({**answer, "outputs": outputs})
    if not blobs:
        return header
    json_bytes = header.get_data()
    response = Response(json_bytes + b"".join(blobs), mimetype="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(len(json_bytes))
    return response


def _infer(model_name: str, version: str | None):
    _model_name_checked(model_name)
    body, binary = _request()
    adopt_request_id(body.get("id"), deduplicates=False)
    texts = _texts(body, binary)
    requested = body.get("outputs") or []
    names = wanted_outputs([o["name"] for o in requested])
    top_k = next(((o.get("parameters") or {}).get("top_k") for o in requested if o["name"] == "explanation"), None)
    shape = infer_answer(state().settings.model_name)
    answer = dataplane().score(
        call(), texts, version, request.path, shape, client_gone=client_gone(), detail=detail_for(names, top_k)
    )
    return _render(answer, names, _binary_outputs(body, names))


@bp.post("/models/<model_name>/infer")
def infer(model_name: str):
    return _infer(model_name, None)


@bp.post("/models/<model_name>/versions/<version>/infer")
def infer_version(model_name: str, version: str):
    return _infer(model_name, version)
