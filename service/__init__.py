"""The online service: `create_app()` builds the Flask app (gunicorn: `service:create_app()`)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from . import errors, logs, metrics, request_context
from .auth import ApiKeys
from .config import ConfigError, DefaultConfig, settings_from
from .openapi import bp as docs_bp
from .state import ServiceState
from .views.common import add_guard_headers, enter_in_flight, leave_in_flight
from .views.health import bp as health_bp
from .views.models import list_models, model_drift
from .views.predict import version_blueprint
from .views.router import bp as router_bp

__all__ = ["create_app", "ConfigError"]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Defaults, then TOXISERVE_* environment variables, then `config`; loads and warms the models."""
    app = Flask(__name__)
    app.config.from_object(DefaultConfig)
    app.config.from_prefixed_env("TOXISERVE")
    app.config.update(config or {})
    settings = settings_from(app.config)
    logs.configure_logging(settings.log_level)

    api_keys = ApiKeys.from_settings(app.config["API_KEYS"], app.config["API_KEYS_FILE"])
    if not api_keys and not settings.auth_disabled:
        raise ConfigError(
            "no API keys configured: set TOXISERVE_API_KEYS='id:key,...' or TOXISERVE_API_KEYS_FILE, "
            "or TOXISERVE_AUTH_DISABLED=true for local development only"
        )
    service = ServiceState(settings, api_keys)
    app.extensions["toxiserve"] = service

    app.before_request(logs.start_timer)
    app.before_request(request_context.assign_request_id)
    app.before_request(enter_in_flight)
    app.teardown_request(leave_in_flight)
    app.after_request(request_context.echo_request_id)
    app.after_request(add_guard_headers)
    app.after_request(logs.log_request)
    errors.register_error_handlers(app)

    v1 = version_blueprint("v1", settings.stable_version)
    v1.add_url_rule("/models", "models", list_models, methods=["GET"])
    v1.add_url_rule("/models/<version>/drift", "drift", model_drift, methods=["GET"])
    blueprints = (health_bp, docs_bp, metrics.bp, v1, version_blueprint("v2", settings.canary_version), router_bp)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)

    if settings.background_load:
        service.load_models_in_background()
    else:
        service.load_models()
    return app
