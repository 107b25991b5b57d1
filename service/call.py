"""One request's facts, whatever its transport: what the data plane learns, the log line and metrics read."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# What a request's log line carries, besides route/method/status/latency: never text, never a key.
LOGGED_FACTS = (
    "model_version",
    "arm",
    "rollout_revision",
    "key_id",
    "text_length",
    "text_count",
    "error_code",
    "replayed",
)


@dataclass
class Call:
    """One request's facts, whatever its transport: the log line and the metrics read these."""

    transport: str
    request_id: str
    # What the client deduplicates on (the body's request_id, or Idempotency-Key): a retry with it
    # is answered from the first answer. A correlation id (X-Request-ID) never is.
    idempotency_key: str | None = None
    correlation_id: str | None = None  # the client's X-Request-ID, echoed as it came
    started: float = field(default_factory=time.perf_counter)
    key_id: str | None = None
    model_version: str | None = None
    arm: str | None = None
    rollout_revision: int | None = None  # the revision a routed request was routed under
    text_length: int | None = None
    text_count: int | None = None
    replayed: bool | None = None
    error_code: str | None = None
    retry_headers: dict[str, str] = field(default_factory=dict)  # rate-limit headers of an admitted call
    # Id headers the client sent malformed (HTTP): refused when the route adopts its ids, not before,
    # so that a refusal for the key or the body still comes first.
    malformed_id_headers: tuple[str, ...] = ()

    def span_attributes(self) -> dict:
        """What a request's trace span carries: the same facts as its log line, under toxiserve.*."""
        return {f"toxiserve.{name}": value for name, value in self.log_fields().items() if name != "key_id"}

    def log_fields(self) -> dict:
        fields = {name: getattr(self, name) for name in LOGGED_FACTS if getattr(self, name) is not None}
        fields["request_id"] = self.request_id
        if self.correlation_id is not None and self.correlation_id != self.request_id:
            fields["correlation_id"] = self.correlation_id
        return fields
