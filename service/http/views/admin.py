"""The admin API: read and steer the rollout while serving (`/admin/rollout...`).

Admin keys (`TOXISERVE_ADMIN_KEYS`) are separate from prediction keys: a prediction key gets 403
FORBIDDEN, no key or an unknown one 401. Every write answers 200 with the new state; a stale
`expected_revision` is 409 REVISION_CONFLICT, an unusable version or value 422 INVALID_ROLLOUT,
and then nothing changed.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from marshmallow import ValidationError

from service.admission.auth import API_KEY_HEADER
from service.core.schemas import (
    RolloutActionSchema,
    RolloutChangeSchema,
    RolloutPlanRequestSchema,
    RolloutResetSchema,
)
from service.errors import ForbiddenError, UnauthorizedError
from service.http.views.common import client_address, load_body, state
from service.rollout.plan import after_manual_change
from service.rollout.shadow import summary
from service.rollout.state import HISTORY_LIMIT, InvalidRolloutError
from shared_features.errors import UnprocessableError

bp = Blueprint("admin", __name__, url_prefix="/admin")
_change_schema, _action_schema, _plan_schema = RolloutChangeSchema(), RolloutActionSchema(), RolloutPlanRequestSchema()
_reset_schema = RolloutResetSchema()


@bp.before_request
def authenticate_admin() -> None:
    presented, address = request.headers.get(API_KEY_HEADER), client_address()
    service = state()
    service.auth_failures.check(address)
    admin_id = service.admin_keys.identify(presented)
    if admin_id is not None:
        g.call.key_id = admin_id
        return
    if service.api_keys.identify(presented) is not None:  # a real key, in the wrong place: not a guess
        raise ForbiddenError("this key may predict, not administer: the admin API takes a TOXISERVE_ADMIN_KEYS key")
    service.auth_failures.failed(address)
    raise UnauthorizedError(f"missing or invalid admin key: send it in the {API_KEY_HEADER} header")


def _body(schema) -> dict:
    if not request.content_length and not request.is_json:
        return {}  # promote / rollback without a body
    try:
        return load_body(schema)
    except ValidationError as exc:  # a value out of range is an unusable rollout, not a malformed request
        raise InvalidRolloutError("invalid rollout change", details=exc.messages) from None


def _write(change: dict, body: dict, decision: dict | None = None):
    rollout, by = state().rollout, g.call.key_id
    plan = after_manual_change(change, by)  # a hand on the arms or the share ends a running plan
    reason = body.get("reason", "")
    new = rollout.update(change, body.get("expected_revision"), by, reason, plan=plan, decision=decision)
    return jsonify(new.public())


@bp.get("/rollout")
def get_rollout():
    return jsonify(state().rollout.seed_or_read().public())


@bp.put("/rollout")
def put_rollout():
    body = _body(_change_schema)
    change = {name: value for name, value in body.items() if name not in ("reason", "expected_revision")}
    if not change:
        raise InvalidRolloutError("nothing to change: give stable, canary, canary_percent, shadow or shadow_percent")
    return _write(change, body)


@bp.post("/rollout/promote")
def promote():
    body = _body(_action_schema)
    current = state().rollout.seed_or_read()
    if current.canary == current.stable:
        raise InvalidRolloutError(f"nothing to promote: the canary is the stable version ({current.stable})")
    # The old stable stays named as the canary at 0 %: loaded, inspectable, one PUT from a rollback.
    return _write({"stable": current.canary, "canary": current.stable, "canary_percent": 0.0}, body)


@bp.post("/rollout/rollback")
def rollback():
    body = _body(_action_schema)
    return _write({"canary_percent": 0.0}, body)


@bp.post("/rollout/reset")
def reset():
    """Re-seed the rollout from this host's settings (TOXISERVE_STABLE_VERSION, _CANARY_VERSION,
    _CANARY_PERCENT; no shadow): the way out of a stored state that names versions nobody has.
    A new revision, kept in the history as a reset with its (required) reason."""
    body = _body(_reset_schema)
    if not body:
        raise InvalidRolloutError("a reset needs a reason", details={"reason": ["required"]})
    settings = state().settings
    seeded = {"stable": settings.stable_version, "canary": settings.canary_version}
    change = {**seeded, "canary_percent": settings.canary_percent, "shadow": None, "shadow_percent": 0.0}
    return _write(change, body, decision={"decision": "reset"})


@bp.get("/rollout/shadow")
def shadow_summary():
    """Agreement and score difference per (primary, shadow) pair, over every worker of this host."""
    current = state().rollout.current
    return jsonify(shadow=current.shadow, shadow_percent=current.shadow_percent, **summary())


@bp.get("/rollout/plan")
def get_plan():
    """The plan (running or finished), its step, and each guardrail's value against its bound."""
    return jsonify(state().controller.describe())


@bp.put("/rollout/plan")
def start_plan():
    body = _body(_plan_schema)
    if not body:
        raise InvalidRolloutError("a plan needs at least its canary", details={"canary": ["required"]})
    return jsonify(state().controller.start(body, g.call.key_id))


@bp.delete("/rollout/plan")
def abort_plan():
    body = _body(_action_schema)
    return jsonify(state().controller.abort(g.call.key_id, body.get("reason", "")))


@bp.get("/rollout/history")
def history():
    """Newest first, a page at a time: `limit` entries (1-1000, default 1000) older than the entry
    whose id is `before`; `next_before` is the cursor of the next page (null at the end)."""
    limit, before = _query_int("limit", 1, HISTORY_LIMIT, HISTORY_LIMIT), _query_int("before", 1, 1 << 62, None)
    entries = state().rollout.history(limit, before)
    next_before = entries[-1].get("id") if len(entries) == limit else None
    return jsonify(history=entries, next_before=next_before)


def _query_int(name: str, low: int, high: int, default: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise UnprocessableError(f"{name} must be an integer from {low} to {high}", details={name: [raw[:40]]})
    return int(raw)
