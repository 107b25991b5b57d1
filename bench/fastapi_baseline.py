"""The peer a user would most likely pick instead: FastAPI on uvicorn (`uvicorn[standard]`: uvloop and
httptools), calling the same v1 pipeline's `predict_proba` as the bare-model Flask baseline, with a
pydantic body model as FastAPI's tutorial writes one. Two ways to write the endpoint, both measured:
- `create_app`: `async def`, the faster: scoring one text takes well under a millisecond, and
  handing it to the thread pool costs more than it blocks the loop;
- `create_thread_pool_app`: a plain `def`, which FastAPI runs in its thread pool: what its docs
  advise for blocking calls, and how most model-serving examples write it.

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


def create_app(in_thread_pool: bool = False) -> FastAPI:
    registry = ModelRegistry()
    threshold = registry.manifest("toxicity", "v1")["threshold"]
    pipeline = joblib.load(registry.path("toxicity", "v1") / "model.joblib")
    app = FastAPI()

    def one(body: PredictBody) -> dict:
        score = float(pipeline.predict_proba([body.text])[0, 1])
        return {"label": "toxic" if score >= threshold else "clean", "score": score, "model_version": "v1"}

    async def predict(body: PredictBody) -> dict:
        return one(body)

    def predict_in_thread_pool(body: PredictBody) -> dict:
        return one(body)

    async def batch_predict(body: BatchBody) -> dict:
        scores = pipeline.predict_proba(body.texts)[:, 1]
        results = [{"label": "toxic" if s >= threshold else "clean", "score": float(s)} for s in scores]
        return {"results": results, "model_version": "v1"}

    for route in ("/v1/predict", "/predict"):
        app.post(route)(predict_in_thread_pool if in_thread_pool else predict)
    app.post("/v1/batch_predict")(batch_predict)
    app.get("/readyz")(lambda: {"status": "ready"})
    return app


def create_thread_pool_app() -> FastAPI:
    return create_app(in_thread_pool=True)
