"""The data plane every transport calls: admission in one order, routing, inference and micro-batching
over the loaded models, the ServiceState that owns them, lifecycle, readiness, request schemas and
OIP tensor codecs. It may import admission, rollout, store, observability and the ground files."""
