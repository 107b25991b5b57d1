"""The gRPC edge: toxiserve's own API and the Open Inference Protocol servicer over the same data
plane (`python -m service.grpc` runs the process); `gen/` holds the generated stubs. It may import
everything below it (core and down), never `http`."""
