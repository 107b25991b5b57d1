"""The peer a user would most likely pick instead: FastAPI on uvicorn (`uvicorn[standard]`: uvloop and
httptools), calling the same v1 pipeline's `predict_proba` as the bare-model Flask baseline, with a
pydantic body model as FastAPI's tutorial writes one. The endpoint is `async def`, the faster of the
two ways to write it: scoring one text takes well under a millisecond, and handing it to the thread
pool (a plain `def`) cost more than it blocks the loop (2,083 / 2,128 req/s at 8 / 32 connections
against 1,559 / 1,628 for `def`, one run on the 2-core machine).

    uvicorn --factory bench.fastapi_baseline:create_app --workers 2 --port PORT

Needs the `bench` extra (`pip install -e '.[bench]'`); bench.online_bench skips it when absent.
"""

from __future__ import annotations

import joblib
from fastapi import FastAPI
from pydantic import BaseModel

from shared_features import ModelRegistry


class PredictBody(BaseModel):
    text: str


class BatchBody(BaseModel):
    texts: list[str]


def create_app() -> FastAPI:
    registry = ModelRegistry()
    threshold = registry.manifest("toxicity", "v1")["threshold"]
    pipeline = joblib.load(registry.path("toxicity", "v1") / "model.joblib")
    app = FastAPI()

    def one(body: PredictBody) -> dict:
        score = float(pipeline.predict_proba([body.text])[0, 1])
        return {"label": "toxic" if score >= threshold else "clean", "score": score, "model_version": "v1"}

    async def predict(body: PredictBody) -> dict:
        return one(body)

    async def batch_predict(body: BatchBody) -> dict:
        scores = pipeline.predict_proba(body.texts)[:, 1]
        results = [{"label": "toxic" if s >= threshold else "clean", "score": float(s)} for s in scores]
        return {"results": results, "model_version": "v1"}

    for route in ("/v1/predict", "/predict"):
        app.post(route)(predict)
    app.post("/v1/batch_predict")(batch_predict)
    app.get("/readyz")(lambda: {"status": "ready"})
    return app
