"""The online service: `create_app()` builds the Flask app (gunicorn: `service:create_app()`)."""

from __future__ import annotations

import os
from typing import Any

from flask import Config, Flask

from shared_features.errors import ModelError

from . import errors, logs, metrics, request_context
from .auth import ApiKeys
from .config import ConfigError, DefaultConfig, settings_from
from .openapi import bp as docs_bp
from .state import ServiceState
from .views.admin import bp as admin_bp
from .views.common import add_guard_headers
from .views.feedback import give_feedback, model_quality
from .views.health import bp as health_bp
from .views.models import list_models, model_drift
from .views.oip import bp as oip_bp
from .views.predict import version_blueprint
from .views.router import bp as router_bp

__all__ = ["ConfigError", "build_service", "create_app", "load_config"]


def load_config(config: dict[str, Any] | None = None, root_path: str | None = None) -> Config:
    """Defaults, then TOXISERVE_* environment variables, then `config`: for HTTP and gRPC alike."""
    loaded = Config(root_path or os.path.dirname(__file__))
    loaded.from_object(DefaultConfig)
    loaded.from_prefixed_env("TOXISERVE")
    loaded.update(config or {})
    return loaded


def build_service(config: Config) -> ServiceState:
    """Validated settings, keys and store, with logging configured; models are not loaded yet."""
    settings = settings_from(config)
    logs.configure_logging(settings.log_level.upper())
    api_keys = ApiKeys.from_settings(config["API_KEYS"], config["API_KEYS_FILE"])
    admin_keys = ApiKeys.from_settings(config["ADMIN_KEYS"], config["ADMIN_KEYS_FILE"], "TOXISERVE_ADMIN_KEYS")
    if not api_keys and not settings.auth_disabled:
        raise ConfigError(
            "no API keys configured: set TOXISERVE_API_KEYS='id:key,...' or TOXISERVE_API_KEYS_FILE, "
            "or TOXISERVE_AUTH_DISABLED=true for local development only"
        )
    return ServiceState(settings, api_keys, admin_keys)


def begin_request() -> None:
    """Every request: its Call (clock and id, so even a refusal carries one)."""
    request_context.begin_call()


def finish_response(response):
    """Every answer: its log line and metrics, the guard headers, the request id."""
    return request_context.echo_request_id(add_guard_headers(logs.log_request(response)))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Defaults, then TOXISERVE_* environment variables, then `config`; loads and warms the models."""
    app = Flask(__name__)
    app.config.update(load_config(config, app.root_path))
    service = build_service(app.config)
    settings = service.settings
    app.extensions["toxiserve"] = service

    app.before_request(begin_request)
    app.after_request(finish_response)
    errors.register_error_handlers(app)

    # A versioned path serves that model version and nothing else; the router follows the rollout.
    v1 = version_blueprint("v1", "v1")
    v1.add_url_rule("/models", "models", list_models, methods=["GET"])
    v1.add_url_rule("/models/<version>/drift", "drift", model_drift, methods=["GET"])
    v1.add_url_rule("/models/<version>/quality", "quality", model_quality, methods=["GET"])
    v1.add_url_rule("/feedback", "feedback", give_feedback, methods=["POST"])
    v2 = version_blueprint("v2", "v2")
    blueprints = (health_bp, docs_bp, metrics.bp, v1, v2, router_bp, oip_bp, admin_bp)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)

    if settings.background_load:
        service.load_models_in_background()
    else:
        try:
            service.load_models()
        except ModelError as exc:  # gunicorn prints a RuntimeError (ConfigError) as one line, not a traceback
            raise ConfigError(f"cannot load the models: {exc} (check TOXISERVE_MODEL_DIR and the versions)") from None
    return app
