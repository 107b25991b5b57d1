"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), beside toxiserve.v1.Toxicity
in the gRPC process. Conversion only: admission, idempotency, routing and scoring are the data plane's.

Texts arrive as BYTES in `contents.bytes_contents` or in `raw_input_contents` (4-byte little-endian
lengths); the answer comes in the form the request used: raw outputs for raw inputs (what
tritonclient.grpc sends), typed contents otherwise. The request's `id` is the request id, only
echoed (`idempotency-key` metadata deduplicates). The API key is the `x-api-key` metadata, as for
Toxicity; health and metadata need none.
"""

from __future__ import annotations

import grpc

from service.call import Call
from service.core import oip_tensors
from service.core.readiness import READY
from service.errors import NotFoundError
from service.grpc.gen import open_inference_pb2 as pb
from service.grpc.gen import open_inference_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PLATFORM = "scikit-learn"


class OpenInference(open_inference_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, transport) -> None:
        self.transport = transport  # server.GrpcTransport: the Call, the key, errors, the log line
        self.service = transport.service

    def ServerLive(self, request, context):  # noqa: N802 - gRPC method names
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return pb.ServerReadyResponse(ready=self._ready())

    def ModelReady(self, request, context):  # noqa: N802
        ready = self._ready() and request.name == self.service.settings.model_name
        if ready and request.version:
            ready = request.version in self.service.inference.models
        return pb.ModelReadyResponse(ready=ready)

    def ServerMetadata(self, request, context):  # noqa: N802
        from importlib.metadata import PackageNotFoundError, version

        try:
            server_version = version("toxiserve")
        except PackageNotFoundError:
            server_version = "unknown"
        return pb.ServerMetadataResponse(name="toxiserve", version=server_version, extensions=oip_tensors.EXTENSIONS)

    def ModelMetadata(self, request, context):  # noqa: N802
        def handle(call: Call):
            inference = self._model(request.name)
            versions = [request.version] if request.version else list(inference.models)
            if request.version:
                inference.model(request.version)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            outputs = oip_tensors.outputs_metadata([list(inference.model(v).categories) for v in versions])
            return pb.ModelMetadataResponse(
                name=request.name,
                versions=versions,
                platform=PLATFORM,
                inputs=[tensor(**oip_tensors.INPUT)],
                outputs=[
                    tensor(name=o["name"], datatype=o["datatype"], shape=o["shape"], parameters=_parameters(o))
                    for o in outputs
                ],
            )

        return self.transport.run("ModelMetadata", "", context, handle, authenticate=False)

    def ModelInfer(self, request, context):  # noqa: N802
        def handle(call: Call):
            self._model(request.model_name)
            texts, raw = self._texts(request)
            names = oip_tensors.wanted_outputs([output.name for output in request.outputs])
            top_k = next(
                (
                    _value(o.parameters["top_k"])
                    for o in request.outputs
                    if o.name == "explanation" and "top_k" in o.parameters
                ),
                None,
            )
            version = request.model_version or None
            answer = self.transport.dataplane.score(
                call,
                texts,
                version,
                f"oip-grpc:{request.model_name}:{request.model_version or 'router'}",
                oip_tensors.infer_answer(request.model_name),
                client_gone=lambda: not context.is_active(),
                detail=oip_tensors.detail_for(names, top_k),
            )
            self.transport.replayed_marker(context, call)
            return self._response(answer, names, raw)

        return self.transport.run("ModelInfer", request.id, context, handle, deduplicates=False)

    # -- conversion ------------------------------------------------------------------------------

    def _ready(self) -> bool:
        return self.service.readiness.state == READY and self.service.inference is not None

    def _model(self, name: str):
        inference = self.transport.dataplane.inference()
        if name != self.service.settings.model_name:
            raise NotFoundError(f"no model named {name!r}")
        return inference

    @staticmethod
    def _texts(request) -> tuple[list[str], bool]:
        """The texts, and whether they came raw (so the answer goes back raw)."""
        if len(request.inputs) != 1:
            raise oip_tensors.invalid("expected exactly one input, named 'text'")
        tensor = request.inputs[0]
        count = oip_tensors.check_input(tensor.name, tensor.datatype, list(tensor.shape))
        if request.raw_input_contents:
            if len(request.raw_input_contents) != 1 or tensor.contents.bytes_contents:
                raise oip_tensors.invalid("raw_input_contents must hold exactly the one input, and contents nothing")
            return oip_tensors.decode_bytes_elements(request.raw_input_contents[0], count), True
        elements = list(tensor.contents.bytes_contents)
        if len(elements) != count:
            raise oip_tensors.invalid(f"input 'text' must hold {count} elements, as its shape says")
        try:
            return [element.decode("utf-8") for element in elements], False
        except UnicodeDecodeError:
            raise oip_tensors.invalid("input 'text' holds an element that is not UTF-8") from None

    @staticmethod
    def _response(answer: dict, names: list[str], raw: bool):
        response = pb.ModelInferResponse(
            model_name=answer["model_name"], model_version=answer["model_version"], id=answer["id"]
        )
        for tensor in (t for name in names for t in answer["outputs"] if t["name"] == name):
            output = response.outputs.add(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"], parameters=_parameters(tensor)
            )
            if raw:
                response.raw_output_contents.append(oip_tensors.raw_output(tensor))
            elif tensor["datatype"] == "FP64":
                output.contents.fp64_contents.extend(tensor["data"])
            else:
                output.contents.bytes_contents.extend(label.encode("utf-8") for label in tensor["data"])
        return response


def _value(parameter):
    """An InferParameter's value, whichever kind it was sent as."""
    kind = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, kind) if kind else None


def _parameters(tensor: dict) -> dict:
    """A tensor's string parameters (the categories' names) as InferParameters."""
    return {key: pb.InferParameter(string_param=value) for key, value in tensor.get("parameters", {}).items()}


def add_to_server(transport, server: grpc.Server) -> str:
    open_inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(OpenInference(transport), server)
    return SERVICE_NAME
