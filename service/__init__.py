"""The online service: `create_app()` builds the Flask app (gunicorn: `service:create_app()`).

The tree reads as the architecture, every import running downward:
    http | grpc            the edges: transports that convert, call the data plane, convert back
    core                   data plane, inference, state, micro-batching, lifecycle, schemas
    admission | rollout    keys, limits, overload, deadlines, idempotency | arms, plans, guardrails
    store                  shared state for all workers and hosts (SQLite, Redis)
    observability          metrics, logs, drift
    settings, errors, request_context, call   the ground every layer stands on
The import-linter contracts in setup.cfg hold this order; CI runs them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "build_service", "create_app", "load_config"]

# Importing `service.settings` (gunicorn.conf.py does, before prometheus_client may load) must not
# pull in the whole Flask app, so the public names resolve on first use.
_PUBLIC = {
    "create_app": "service.http.app",
    "build_service": "service.core.bootstrap",
    "load_config": "service.core.bootstrap",
    "ConfigError": "service.settings",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'service' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value
