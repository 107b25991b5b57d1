"""From settings to a ServiceState: what the HTTP app factory and the gRPC process both start from."""

from __future__ import annotations

import os
from typing import Any

from flask import Config

from service.admission.auth import MIN_KEY_CHARS, ApiKeys
from service.core.state import ServiceState
from service.observability import logs, tracing
from service.settings import ConfigError, DefaultConfig, settings_from

__all__ = ["ConfigError", "build_service", "load_config"]

# Flask's Config is a plain dict with loaders (defaults object, prefixed environment): the gRPC
# process uses it for the same reading of the same variables, without building an app.
_SERVICE_ROOT = os.path.dirname(os.path.dirname(__file__))


def load_config(config: dict[str, Any] | None = None, root_path: str | None = None) -> Config:
    """Defaults, then TOXISERVE_* environment variables, then `config`: for HTTP and gRPC alike."""
    loaded = Config(root_path or _SERVICE_ROOT)
    loaded.from_object(DefaultConfig)
    loaded.from_prefixed_env("TOXISERVE")
    loaded.update(config or {})
    return loaded


def build_service(config: Config) -> ServiceState:
    """Validated settings, keys and store, with logging configured; models are not loaded yet."""
    settings = settings_from(config)
    logs.configure_logging(settings.log_level.upper())
    tracing.configure(settings.tracing)
    api_keys = ApiKeys.from_settings(config["API_KEYS"], config["API_KEYS_FILE"])
    admin_keys = ApiKeys.from_settings(config["ADMIN_KEYS"], config["ADMIN_KEYS_FILE"], "TOXISERVE_ADMIN_KEYS")
    if not api_keys and not settings.auth_disabled:
        raise ConfigError(
            "no API keys configured: set TOXISERVE_API_KEYS='id:key,...' or TOXISERVE_API_KEYS_FILE, "
            "or TOXISERVE_AUTH_DISABLED=true for local development only"
        )
    if settings.routing_key is not None and len(settings.routing_key) < MIN_KEY_CHARS:
        # A guessable routing key would let clients pick their arm again.
        raise ConfigError(f"TOXISERVE_ROUTING_KEY needs at least {MIN_KEY_CHARS} characters")
    return ServiceState(settings, api_keys, admin_keys)
