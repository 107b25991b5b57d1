"""The HTTP edge: the app factory, the gunicorn worker (request buffering, raw errors), OpenAPI and
every blueprint in `views/`. Views validate, call the data plane and serialise; they may import
everything below them (core, admission, rollout, store, observability, ground), never `grpc`."""
