"""The blueprints: fixed version routes (v1, v2), the canary router, OIP REST, admin, health and
models. Each route is a few lines: parse, call `service.core.dataplane`, answer."""
