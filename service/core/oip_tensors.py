"""Open Inference Protocol tensors: the model's one input and its outputs, in JSON and raw binary form.

`score` and `label` are what a request that names no outputs gets (as before). Two more come when
asked for by name: `categories`, FP64 [N, C] (row-major; its `parameters.categories` names the C
columns, comma-separated, as does the version's model metadata), and `explanation`, BYTES [N], one
JSON list per text of its top contributions (`parameters.top_k` on the requested output, default 5).

Shared by the REST endpoints (with the binary tensor data extension) and the gRPC service. Raw
binary tensors are little-endian and row-major; a BYTES element is a 4-byte little-endian unsigned
length followed by that many bytes (KServe's and Triton's binary tensor data extension, and gRPC's
`raw_input_contents`). Decoding never reads past a declared size, and refuses leftovers.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from service.core.inference import PLAIN, Detail, Prediction
from service.core.schemas import DEFAULT_EXPLAIN, MAX_EXPLAIN
from service.errors import EmptyBatchError, InvalidPayloadError

INPUT = {"name": "text", "datatype": "BYTES", "shape": [-1]}
OUTPUTS = (
    {"name": "score", "datatype": "FP64", "shape": [-1]},
    {"name": "label", "datatype": "BYTES", "shape": [-1]},
    {"name": "categories", "datatype": "FP64", "shape": [-1, -1]},
    {"name": "explanation", "datatype": "BYTES", "shape": [-1]},
)
OUTPUT_NAMES = tuple(output["name"] for output in OUTPUTS)
DEFAULT_OUTPUTS = ("score", "label")  # what a request that names none gets
EXTENSIONS = ["binary_tensor_data"]
_LENGTH = struct.Struct("<I")


def invalid(message: str, field: str = "inputs") -> InvalidPayloadError:
    return InvalidPayloadError(message, details={field: [message]})


def element_count(shape: list[int]) -> int:
    """N for shape [N] or [N, 1], the two shapes a list of texts can have."""
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
        raise invalid(f"input 'text' must have shape [N] or [N, 1], got {shape}")
    return shape[0]


def check_input(name: str, datatype: str, shape: list[int]) -> int:
    if name != "text":
        raise invalid(f"unknown input {name!r}; this model has one input, 'text'")
    if datatype != "BYTES":
        raise invalid("input 'text' must have datatype BYTES")
    count = element_count(shape)
    if count == 0:
        raise EmptyBatchError("input 'text' is empty")
    return count


def decode_bytes_elements(raw: bytes, count: int) -> list[str]:
    """`count` length-prefixed UTF-8 elements filling `raw` exactly."""
    view, offset, texts = memoryview(raw), 0, []
    for index in range(count):
        if offset + 4 > len(view):
            raise invalid(f"binary input 'text' ends inside the length of element {index}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise invalid(
                f"binary input 'text' element {index} declares {length} bytes; only {len(view) - offset} remain"
            )
        try:
            texts.append(str(view[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise invalid(f"binary input 'text' element {index} is not UTF-8") from None
        offset += length
    if offset != len(view):
        raise invalid(f"binary input 'text' has {len(view) - offset} bytes after its {count} elements")
    return texts


def encode_bytes_elements(items: list[str]) -> bytes:
    return b"".join(_LENGTH.pack(len(encoded)) + encoded for encoded in (item.encode("utf-8") for item in items))


def json_texts(data, count: int) -> list[str]:
    """The JSON `data` of input 'text': N strings, flat or as [[t1], [t2], ...]."""
    if isinstance(data, list) and data and all(isinstance(row, list) and len(row) == 1 for row in data):
        data = [row[0] for row in data]
    if not isinstance(data, list) or len(data) != count or not all(isinstance(text, str) for text in data):
        raise invalid(f"input 'text' must hold {count} strings, as its shape says")
    return data


def outputs_metadata(category_names: list[list[str]]) -> list[dict]:
    """The outputs' metadata for versions with these categories: C and the names where all agree."""
    outputs = [dict(output) for output in OUTPUTS]
    if category_names and all(names == category_names[0] for names in category_names):
        outputs[2] = {**outputs[2], "shape": [-1, len(category_names[0])]}
        outputs[2]["parameters"] = {"categories": ",".join(category_names[0])}
    return outputs


def output_tensors(predictions: list[Prediction]) -> list[dict]:
    """Every output asked for, in JSON form: what idempotency stores; a transport picks and encodes them."""
    count = len(predictions)
    tensors = [
        {"name": "score", "datatype": "FP64", "shape": [count], "data": [p.score for p in predictions]},
        {"name": "label", "datatype": "BYTES", "shape": [count], "data": [p.label for p in predictions]},
    ]
    first = predictions[0]
    if first.categories is not None:
        names = list(first.categories)
        tensors.append(
            {
                "name": "categories",
                "datatype": "FP64",
                "shape": [count, len(names)],
                "data": [p.categories[name] for p in predictions for name in names],
                "parameters": {"categories": ",".join(names)},
            }
        )
    if first.explanation is not None:
        data = [json.dumps(p.explanation, separators=(",", ":"), ensure_ascii=False) for p in predictions]
        tensors.append({"name": "explanation", "datatype": "BYTES", "shape": [count], "data": data})
    return tensors


def infer_answer(model_name: str):
    """The data plane's `shape` for an OIP inference: both outputs in JSON form, stored and replayed
    as they are; each transport then picks the requested outputs and encodes them its own way."""

    def shape(predictions: list[Prediction], model_version: str, request_id: str) -> dict:
        return {
            "model_name": model_name,
            "model_version": model_version,
            "id": request_id,
            "outputs": output_tensors(predictions),
        }

    return shape


def wanted_outputs(requested: list[str]) -> list[str]:
    unknown = sorted(set(requested) - set(OUTPUT_NAMES))
    if unknown:
        raise invalid(f"unknown outputs {unknown}; this model has {', '.join(OUTPUT_NAMES)}", "outputs")
    return requested or list(DEFAULT_OUTPUTS)


def detail_for(names: list[str], top_k: object = None) -> Detail:
    """What scoring must add for the requested outputs; `top_k` is the explanation output's parameter."""
    if "explanation" not in names:
        return Detail(categories="categories" in names) if "categories" in names else PLAIN
    if top_k is None:
        top_k = DEFAULT_EXPLAIN
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_EXPLAIN:
        raise invalid(f"output 'explanation' parameter top_k must be a whole number from 1 to {MAX_EXPLAIN}", "outputs")
    return Detail(categories="categories" in names, explain=top_k)


def raw_output(tensor: dict) -> bytes:
    """An output tensor's data as raw little-endian bytes."""
    if tensor["datatype"] == "FP64":
        return np.asarray(tensor["data"], dtype="<f8").tobytes()
    return encode_bytes_elements(tensor["data"])
