"""What the service says about itself: Prometheus metrics (multiprocess), JSON logs and input
drift. It may import only the ground files (settings, errors, request_context, call)."""
