"""`python -m service.grpc`: the gRPC process (toxiserve's API, the Open Inference Protocol, health, reflection)."""

from service.grpc.server import serve

raise SystemExit(serve())
