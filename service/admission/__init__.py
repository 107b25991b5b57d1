"""What decides whether a request is served: API keys, rate limits, backpressure, deadlines and
idempotency. It may import store, observability and the ground files; not rollout, not core."""
