"""Generated gRPC stubs for proto/toxicity.proto (committed; `python -m service.grpc.gen` regenerates).

Committed so that installing the service needs no protoc; tests/service/test_grpc_stubs.py fails
when they no longer match the .proto.
"""
