"""A faulty model for bench.controller_bench: the v1 pipeline made to raise on some texts or to
sleep. Unpickled inside gunicorn workers, so it imports nothing heavy."""

from __future__ import annotations

import time


class Faulty:
    def __init__(self, pipeline, raise_on: str | None = None, sleep_seconds: float = 0.0) -> None:
        self.pipeline, self.raise_on, self.sleep_seconds = pipeline, raise_on, sleep_seconds

    def predict_proba(self, texts):
        if self.raise_on and any(self.raise_on in text for text in texts):
            raise RuntimeError("a model bug on some inputs")
        time.sleep(self.sleep_seconds)
        return self.pipeline.predict_proba(texts)
