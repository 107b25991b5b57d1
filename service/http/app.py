"""The Flask app factory: blueprints, hooks and error handlers over one ServiceState."""

from __future__ import annotations

from typing import Any

from flask import Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from service import errors, request_context
from service.core.bootstrap import build_service, load_config
from service.http.hot_routes import HotRoutes
from service.http.openapi import bp as docs_bp
from service.http.views.admin import bp as admin_bp
from service.http.views.common import add_guard_headers
from service.http.views.feedback import give_feedback, model_quality
from service.http.views.health import bp as health_bp
from service.http.views.models import list_models, model_drift
from service.http.views.oip import bp as oip_bp
from service.http.views.predict import batch_predict_version, predict_version, version_blueprint
from service.http.views.router import bp as router_bp
from service.observability import logs, metrics, tracing
from service.settings import ConfigError
from shared_features.errors import ModelError


def begin_request() -> None:
    """Every request: its Call (clock and id, so even a refusal carries one), and its span when tracing."""
    request_context.begin_call()
    if tracing.enabled():
        route = request.url_rule.rule if request.url_rule else "unmatched"
        g.span, g.span_token = tracing.start_span(f"{request.method} {route}", request.headers, "SERVER")


def finish_response(response):
    """Every answer: its log line and metrics (inside its span), the guard headers, the request id."""
    response = request_context.echo_request_id(add_guard_headers(logs.log_request(response)))
    if g.get("span") is not None:
        http = {"http.request.method": request.method, "http.response.status_code": response.status_code}
        if request.url_rule:
            http["http.route"] = request.url_rule.rule
        tracing.end_span(g.span, g.span_token, response.status_code, http | g.call.span_attributes())
        g.span = None
    return response


def close_span(_error=None) -> None:
    """teardown: a span an answer never closed (an exception past every handler) still ends."""
    if g.get("span") is not None:
        tracing.end_span(g.span, g.span_token, 500, {})
        g.span = None


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Defaults, then TOXISERVE_* environment variables, then `config`; loads and warms the models."""
    app = Flask("service")  # the package, so root_path is service/ as it always was
    app.config.update(load_config(config, app.root_path))
    service = build_service(app.config)
    settings = service.settings
    app.extensions["toxiserve"] = service
    app.wsgi_app = HotRoutes(app.wsgi_app, app)  # the scoring routes' common case, without Flask's machinery
    if settings.proxy_hops:  # behind N proxies, the client is what they put in X-Forwarded-For
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops)

    app.before_request(begin_request)
    app.after_request(finish_response)
    app.teardown_request(close_span)
    errors.register_error_handlers(app)

    # A versioned path serves that model version and nothing else; the router follows the rollout.
    v1 = version_blueprint("v1", "v1")
    v1.add_url_rule("/models", "models", list_models, methods=["GET"])
    v1.add_url_rule("/models/<version>/drift", "drift", model_drift, methods=["GET"])
    v1.add_url_rule("/models/<version>/quality", "quality", model_quality, methods=["GET"])
    v1.add_url_rule("/feedback", "feedback", give_feedback, methods=["POST"])
    # Any version the rollout names, with the fixed routes' contract (/v1 is the API's version here)
    v1.add_url_rule("/models/<version>/predict", "model_predict", predict_version, methods=["POST"])
    v1.add_url_rule("/models/<version>/batch_predict", "model_batch_predict", batch_predict_version, methods=["POST"])
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
