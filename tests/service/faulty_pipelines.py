"""Faulty pipelines the bad canaries pickle. Unpickled inside gunicorn workers, so this module
imports nothing heavy (the web process refuses pandas)."""

from __future__ import annotations

import time

RAISES_ON = "!"  # in one tweet of ten; not in the service's warm-up text


class RaisesOnSome:
    """v1's scores, except that texts with RAISES_ON make it raise: a model bug on some inputs."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def predict_proba(self, texts):
        if any(RAISES_ON in text for text in texts):
            raise RuntimeError("a model bug on some inputs")
        return self.pipeline.predict_proba(texts)


class Sleeps:
    """v1's scores, after a pause: a model that became slow."""

    def __init__(self, pipeline, seconds: float) -> None:
        self.pipeline, self.seconds = pipeline, seconds

    def predict_proba(self, texts):
        time.sleep(self.seconds)
        return self.pipeline.predict_proba(texts)
