"""marshmallow schemas: request validation (shape and types) and the documented response contract."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from service.request_context import REQUEST_ID_RULE, REQUEST_ID_SCHEMA_PATTERN, is_valid_request_id

LABELS = ("toxic", "clean")
DEFAULT_EXPLAIN = 5  # top contributions for `"explain": true`
MAX_EXPLAIN = 50  # the most an answer lists: bounds the work and the body


class ExplainField(fields.Field):
    """`true` (the top DEFAULT_EXPLAIN), `false` (none) or a whole number k, 0..MAX_EXPLAIN: how many
    contributions each answer lists. Read as k; 0 adds nothing."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            return DEFAULT_EXPLAIN if value else 0
        if isinstance(value, int) and 0 <= value <= MAX_EXPLAIN:
            return value
        raise ValidationError(f"must be true, false or a whole number from 0 to {MAX_EXPLAIN}")


class ExactBoolean(fields.Boolean):
    """true or false and nothing else: 0, 1 and "yes" are 400 (0 == False in Python, not in JSON)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class DetailRequestMixin(Schema):
    """What an answer adds on request; a client that sends neither gets exactly the plain answer."""

    categories = ExactBoolean(
        load_default=False,
        metadata={
            "description": "true: each answer adds `categories` ({name: P(category)}, the model's categories; "
            "empty for a model that has none) and `labels` (the categories at or over their thresholds)."
        },
    )
    explain = ExplainField(
        load_default=0,
        metadata={
            "description": f"true (the top {DEFAULT_EXPLAIN}) or k (0-{MAX_EXPLAIN}): each answer adds `explanation`, "
            "the k features that moved its score most, largest first, each with its span in the text sent.",
            "oneOf": [{"type": "boolean"}, {"type": "integer", "minimum": 0, "maximum": MAX_EXPLAIN}],
        },
    )


def _plain_detail(body: dict) -> tuple[bool, int] | None:
    """`categories` and `explain` as DetailRequestMixin loads them, or None where it might refuse them."""
    categories, explain = body.get("categories", False), body.get("explain", 0)
    if categories is not True and categories is not False:
        return None
    if explain is True or explain is False:
        return categories, DEFAULT_EXPLAIN if explain else 0
    if type(explain) is int and 0 <= explain <= MAX_EXPLAIN:
        return categories, explain
    return None


class PlainBodiesFirst(Schema):
    """A schema whose common, valid bodies skip marshmallow's machinery (on a scoring route it cost
    about a tenth of a request: bench.request_breakdown). `_plain` returns exactly what `load`
    would for the bodies it recognises, and None for anything else, which marshmallow then loads
    (or refuses) as before; tests compare the two on valid and invalid bodies alike."""

    def load(self, data, *, many=None, partial=None, unknown=None):
        if many is None and partial is None and unknown is None and type(data) is dict:
            plain = self._plain(data)
            if plain is not None:
                return plain
        return super().load(data, many=many, partial=partial, unknown=unknown)

    def _plain(self, data: dict) -> dict | None:
        raise NotImplementedError


class PredictRequestSchema(DetailRequestMixin, PlainBodiesFirst):
    text = fields.String(required=True, metadata={"description": "Raw text, 1-2000 characters, not blank."})
    request_id = fields.String(metadata={"description": "Client id for retries/idempotency; 1-128 of A-Za-z0-9._:-"})

    def _plain(self, data: dict) -> dict | None:
        if not _PREDICT_KEYS.issuperset(data) or type(data.get("text")) is not str:
            return None
        return _plain_body(data, {"text": data["text"]})


class BatchPredictRequestSchema(DetailRequestMixin, PlainBodiesFirst):
    texts = fields.List(fields.String(), required=True, metadata={"description": "1 to MAX_BATCH_SIZE texts."})
    on_error = fields.String(
        load_default="request",
        validate=validate.OneOf(("request", "item")),
        metadata={
            "description": "`request` (the default): one unusable text refuses the whole batch with 422. `item`: "
            'each unusable text gets `{"error_code", "message"}` in its place in `results`, the others are scored.'
        },
    )
    request_id = fields.String()

    def _plain(self, data: dict) -> dict | None:
        texts, on_error = data.get("texts"), data.get("on_error", "request")
        if not _BATCH_KEYS.issuperset(data) or type(texts) is not list or on_error not in ("request", "item"):
            return None
        if not all(type(text) is str for text in texts):
            return None
        return _plain_body(data, {"texts": list(texts), "on_error": on_error})


_DETAIL_KEYS = frozenset(("categories", "explain", "request_id"))
_PREDICT_KEYS = _DETAIL_KEYS | {"text"}
_BATCH_KEYS = _DETAIL_KEYS | {"texts", "on_error"}


def _plain_body(data: dict, loaded: dict) -> dict | None:
    """`loaded` with the detail fields and the request id, as marshmallow loads them; None if unsure."""
    detail = _plain_detail(data)
    if detail is None:
        return None
    loaded["categories"], loaded["explain"] = detail
    if "request_id" in data:
        if type(data["request_id"]) is not str:
            return None
        loaded["request_id"] = data["request_id"]
    return loaded


class ContributionSchema(Schema):
    """One feature's share of a score: `contribution` is x_j * coef_j, its term of the logit. All of
    a text's contributions plus the model's intercept are the logit of `score`."""

    start = fields.Integer(required=True, metadata={"description": "where the feature starts in the text sent"})
    end = fields.Integer(required=True, metadata={"description": "where it ends (exclusive)"})
    text = fields.String(required=True, metadata={"description": "the text sent, from start to end"})
    feature = fields.String(required=True, metadata={"description": "the n-gram as the model sees it"})
    contribution = fields.Float(required=True)
    categories = fields.Dict(
        keys=fields.String(), values=fields.Float(), required=True, metadata={"description": "its share per category"}
    )


class DetailResponseMixin(Schema):
    categories = fields.Dict(
        keys=fields.String(), values=fields.Float(), metadata={"description": "with categories: P(category)"}
    )
    labels = fields.List(fields.String(), metadata={"description": "with categories: those over their thresholds"})
    explanation = fields.List(fields.Nested(ContributionSchema), metadata={"description": "with explain"})


class PredictResponseSchema(DetailResponseMixin):
    label = fields.String(required=True, validate=validate.OneOf(LABELS))
    score = fields.Float(required=True, metadata={"description": "P(toxic) in [0, 1]."})
    model_version = fields.String(required=True)
    request_id = fields.String(required=True)


class BatchResultSchema(DetailResponseMixin):
    label = fields.String(required=True, validate=validate.OneOf(LABELS))
    score = fields.Float(required=True)


class BatchItemErrorSchema(Schema):
    """In `results` in place of a text that could not be scored, with `"on_error": "item"`."""

    error_code = fields.String(required=True)
    message = fields.String(required=True)


class BatchPredictResponseSchema(Schema):
    results = fields.List(fields.Nested(BatchResultSchema), required=True)
    model_version = fields.String(required=True)
    request_id = fields.String(required=True)


class TensorSchema(Schema):
    name = fields.String(required=True)
    shape = fields.List(fields.Integer(), required=True)
    datatype = fields.String(required=True)
    data = fields.Raw(metadata={"description": "absent when the tensor comes as binary (parameters.binary_data_size)"})
    parameters = fields.Dict()


OIP_OUTPUTS = ("score", "label", "categories", "explanation")


class RequestedOutputSchema(Schema):
    name = fields.String(required=True, validate=validate.OneOf(OIP_OUTPUTS))
    parameters = fields.Dict(
        metadata={"description": '{"binary_data": true} for a binary output; {"top_k": k} for explanation (1-50)'}
    )


class InferRequestSchema(Schema):
    """Open Inference Protocol $inference_request: one input, `text`, BYTES, shape [N] or [N, 1]."""

    id = fields.String()
    parameters = fields.Dict(metadata={"description": '{"binary_data_output": true} for binary outputs'})
    inputs = fields.List(fields.Nested(TensorSchema), required=True)
    outputs = fields.List(fields.Nested(RequestedOutputSchema))


class OutputTensorSchema(Schema):
    name = fields.String(required=True, validate=validate.OneOf(OIP_OUTPUTS))
    shape = fields.List(fields.Integer(), required=True)
    datatype = fields.String(required=True, validate=validate.OneOf(("FP64", "BYTES")))
    data = fields.Raw(
        metadata={
            "description": "scores, category scores row-major (FP64), labels or JSON explanations (BYTES); absent "
            "for a binary output"
        }
    )
    parameters = fields.Dict(
        metadata={"description": '{"binary_data_size": n} for a binary output; categories: the column names'}
    )


class InferResponseSchema(Schema):
    model_name = fields.String(required=True)
    model_version = fields.String(required=True)
    id = fields.String(required=True)
    outputs = fields.List(fields.Nested(OutputTensorSchema), required=True)


class OipErrorSchema(Schema):
    """The Open Inference Protocol's error shape, with the service's code and request id beside it."""

    error = fields.String(required=True)
    error_code = fields.String(required=True)
    request_id = fields.String(required=True, allow_none=True)
    details = fields.Raw()


class ErrorSchema(Schema):
    error_code = fields.String(required=True, metadata={"description": "Stable machine-readable code."})
    message = fields.String(required=True)
    request_id = fields.String(required=True, allow_none=True)
    details = fields.Raw(metadata={"description": "Field-level detail, e.g. which fields are invalid."})


class HealthSchema(Schema):
    status = fields.String(required=True)


class StoreHealthSchema(Schema):
    backend = fields.String(validate=validate.OneOf(("sqlite", "redis")))
    healthy = fields.Boolean(metadata={"description": "false while the store fails (circuit breaker open)"})
    failure_mode = fields.String(validate=validate.OneOf(("open", "closed")))
    cause = fields.String(metadata={"description": "while unhealthy: disk full, read-only, permission denied..."})


class ReadySchema(Schema):
    status = fields.String(
        required=True, validate=validate.OneOf(("ready", "starting", "draining", "store_unavailable"))
    )
    models = fields.Dict(keys=fields.String(), values=fields.Dict())
    store = fields.Nested(StoreHealthSchema)
    degraded = fields.Dict(
        metadata={
            "description": "Present while this process serves less than the stored rollout names: the stored "
            "`revision`, the `missing` versions (version: why), the `stored` state and what it is `serving`."
        }
    )


class ModelInfoSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    threshold = fields.Float(required=True)
    sha256 = fields.String(required=True)
    created_at = fields.String()
    metrics = fields.Dict()
    categories = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(),
        metadata={"description": "the categories it scores: {name: {threshold, description}} (policy thresholds)"},
    )
    intercepts = fields.Dict(
        metadata={
            "description": '{"score": b, "categories": {name: b}}: the logits\' constant terms; with every '
            "contribution of an explanation they add up to the logit of the score (and of each category)"
        }
    )
    role = fields.String(validate=validate.OneOf(("stable", "canary", "shadow")))


class DriftFeatureSchema(Schema):
    psi = fields.Float(allow_none=True, metadata={"description": "null below min_samples"})
    drifted = fields.Boolean()
    edges = fields.List(fields.Float())
    expected = fields.List(fields.Float())
    actual = fields.List(fields.Float())
    counts = fields.List(fields.Integer())


class DriftReportSchema(Schema):
    model_version = fields.String(required=True)
    available = fields.Boolean(required=True)
    samples = fields.Integer()
    min_samples = fields.Integer()
    threshold = fields.Float()
    status = fields.String(
        validate=validate.OneOf(("stable", "drifted", "insufficient")),
        metadata={"description": "insufficient: fewer than min_samples, so drifted: false says nothing"},
    )
    drifted = fields.Boolean()
    features = fields.Dict(keys=fields.String(), values=fields.Nested(DriftFeatureSchema))
    message = fields.String()


class ModelsResponseSchema(Schema):
    models = fields.List(fields.Nested(ModelInfoSchema), required=True)
    canary_percent = fields.Float(required=True)


# --- the admin API (/admin/rollout) ---
class RolloutStateSchema(Schema):
    stable = fields.String(required=True)
    canary = fields.String(required=True)
    canary_percent = fields.Float(required=True)
    shadow = fields.String(required=True, allow_none=True)
    shadow_percent = fields.Float(required=True)
    revision = fields.Integer(required=True)
    updated_at = fields.String(required=True)
    updated_by = fields.String(required=True)
    reason = fields.String(required=True)


# --- admin requests: exact JSON types ---
class ExactNumber(fields.Float):
    """A JSON number and nothing else: "50" (a string) and true are 422, not read as 50 and 1.
    -0.0 is read as 0.0, so it is stored and shown as 0."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs) + 0.0


class ExactInteger(fields.Integer):
    """A JSON integer and nothing else: 1.5, "1" and true are 422 (a revision is never rounded)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class RolloutChangeSchema(Schema):
    """A partial change; every field optional. Values are checked by the rollout (422 INVALID_ROLLOUT)."""

    stable = fields.String(validate=validate.Length(min=1, max=64))
    canary = fields.String(validate=validate.Length(min=1, max=64))
    canary_percent = ExactNumber(validate=validate.Range(min=0, max=100))
    shadow = fields.String(allow_none=True, validate=validate.Length(min=1, max=64))
    shadow_percent = ExactNumber(validate=validate.Range(min=0, max=100))
    reason = fields.String(validate=validate.Length(max=500))
    expected_revision = ExactInteger(validate=validate.Range(min=1))


class RolloutActionSchema(Schema):
    """promote / rollback: why, and optionally the revision the caller saw."""

    reason = fields.String(validate=validate.Length(max=500))
    expected_revision = ExactInteger(validate=validate.Range(min=1))


class RolloutResetSchema(Schema):
    """reset: why (required: a reset throws away whatever the rollout was), and optionally the revision seen."""

    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))
    expected_revision = ExactInteger(validate=validate.Range(min=1))


class RolloutHistoryEntrySchema(Schema):
    revision = ExactInteger(required=True)
    at = fields.String(required=True)
    by = fields.String(required=True)
    change = fields.Dict(required=True)
    reason = fields.String(required=True)
    decision = fields.String(
        validate=validate.OneOf(("start", "abort", "advance", "hold", "rollback", "promote")),
        metadata={"description": "a plan's entries: what was decided (holds change nothing)"},
    )
    plan = fields.String(metadata={"description": "the plan's id"})
    evidence = fields.Dict(metadata={"description": "the controller's evidence: each guardrail against its bound"})
    controller = fields.String(metadata={"description": "host:pid of the process that decided"})
    id = fields.Integer(metadata={"description": "the entry's id, increasing; `before` pages by it"})
    holds = fields.Integer(metadata={"description": "a hold's entry: how many holds of this step it folds"})
    since = fields.String(metadata={"description": "a hold's entry: when the first of them was"})


class RolloutHistorySchema(Schema):
    history = fields.List(fields.Nested(RolloutHistoryEntrySchema), required=True)
    next_before = fields.Integer(
        allow_none=True, metadata={"description": "`before` of the next page; null at the end"}
    )


class RolloutGuardrailsSchema(Schema):
    """Bounds of the guardrails; null turns one off. Defaults in docs/rollouts.md (Automatic rollouts)."""

    max_error_rate_delta = ExactNumber(allow_none=True, validate=validate.Range(min=0, max=1))
    max_latency_ratio = ExactNumber(allow_none=True, validate=validate.Range(min=1, max=1000))
    max_score_psi = ExactNumber(allow_none=True, validate=validate.Range(min=0, max=100))
    min_feedback = ExactInteger(allow_none=True, validate=validate.Range(min=1, max=10_000_000))
    max_f1_drop = ExactNumber(validate=validate.Range(min=0, max=1))
    min_shadow_agreement = ExactNumber(allow_none=True, validate=validate.Range(min=0, max=1))
    max_key_share = ExactNumber(
        allow_none=True,
        validate=validate.Range(min=0, max=1, min_inclusive=False),
        metadata={"description": "no API key's requests count for more than this share of an arm's evidence"},
    )


class RolloutPlanRequestSchema(Schema):
    """PUT /admin/rollout/plan: take `canary` through `steps` on evidence."""

    canary = fields.String(required=True, validate=validate.Length(min=1, max=64))
    steps = fields.List(
        ExactNumber(validate=validate.Range(min=0, max=100, min_inclusive=False)),
        validate=validate.Length(min=1, max=20),
        metadata={"description": "canary shares, increasing; default [10, 25, 50, 100]"},
    )
    step_seconds = ExactNumber(validate=validate.Range(min=0, max=7 * 86400), metadata={"description": "default 60"})
    min_requests = ExactInteger(validate=validate.Range(min=1, max=10_000_000), metadata={"description": "default 100"})
    interval_seconds = ExactNumber(validate=validate.Range(min=0.1, max=3600), metadata={"description": "default 10"})
    max_hold_seconds = ExactNumber(
        validate=validate.Range(min=0, max=7 * 86400), metadata={"description": "default 600"}
    )
    guardrails = fields.Nested(RolloutGuardrailsSchema)
    reason = fields.String(validate=validate.Length(max=500))
    expected_revision = ExactInteger(validate=validate.Range(min=1))


class RolloutPlanSchema(Schema):
    """A plan: running, promoted, rolled_back or aborted; its step; each guardrail against its bound."""

    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("running", "promoted", "rolled_back", "aborted")))
    canary = fields.String(required=True)
    stable = fields.String(required=True)
    steps = fields.List(fields.Float(), required=True)
    step = fields.Integer(required=True)
    current_step = fields.Dict(required=True)
    step_seconds = fields.Float(required=True)
    min_requests = fields.Integer(required=True)
    interval_seconds = fields.Float(required=True)
    max_hold_seconds = fields.Float(required=True)
    guardrails = fields.Dict(required=True, metadata={"description": "the bounds in force (null: off)"})
    evaluation = fields.List(
        fields.Dict(),
        allow_none=True,
        metadata={"description": "each guardrail now (or at the end): status, value, bound and its numbers"},
    )
    step_revisions = fields.List(fields.Integer())
    started_at = fields.String()
    started_by = fields.String()
    finished_at = fields.String(allow_none=True)
    outcome = fields.Dict(allow_none=True)
    next_decision = fields.Dict()
    controller = fields.Dict(allow_none=True)


# --- feedback and quality ---
def request_id_rule(value: str) -> None:
    if not is_valid_request_id(value):
        raise ValidationError(f"must be {REQUEST_ID_RULE}")


class FeedbackItemSchema(Schema):
    request_id = fields.String(required=True, validate=request_id_rule, metadata={"pattern": REQUEST_ID_SCHEMA_PATTERN})
    label = fields.String(required=True, validate=validate.OneOf(("toxic", "clean")))


class FeedbackBatchSchema(Schema):
    items = fields.List(fields.Nested(FeedbackItemSchema), required=True, validate=validate.Length(min=1))


class FeedbackResultSchema(Schema):
    request_id = fields.String(required=True)
    status = fields.String(required=True)
    model_version = fields.String()
    predicted = fields.String()
    counts_as = fields.String(
        validate=validate.OneOf(("evidence", "untrusted", "direct")),
        metadata={
            "description": "evidence: steers rollouts (a labeler key, a routed answer); untrusted: another key's "
            "label on a routed answer; direct: an answer whose version the client named"
        },
    )
    error_code = fields.String()
    message = fields.String()


class FeedbackBatchResultSchema(Schema):
    accepted = fields.Integer(required=True)
    results = fields.List(fields.Nested(FeedbackResultSchema), required=True)
