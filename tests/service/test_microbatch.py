"""Opt-in micro-batching: concurrent single-text requests share model calls, answers unchanged."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.core.microbatch import MicroBatcher
from service.errors import OverloadedError

from .conftest import make_app, post

TEXTS = [f"text number {i} you idiot" if i % 2 else f"lovely day number {i}" for i in range(64)]


def test_concurrent_requests_share_calls_and_scores_are_unchanged():
    plain = make_app().test_client()
    expected = {t: post(plain, "/v2/predict", {"text": t}).json["score"] for t in TEXTS}
    app = make_app(MICROBATCH=True, MICROBATCH_MAX_WAIT_MS=20, MICROBATCH_MAX_SIZE=16)
    inference = app.extensions["toxiserve"].inference
    sizes, real = [], inference._score
    inference._score = lambda model, normalised, raw: sizes.append(len(raw)) or real(model, normalised, raw)
    with ThreadPoolExecutor(16) as pool:
        bodies = list(pool.map(lambda t: post(app.test_client(), "/v2/predict", {"text": t}).json, TEXTS))
    assert [b["score"] for b in bodies] == pytest.approx([expected[t] for t in TEXTS], abs=1e-12, rel=0)
    assert sum(sizes) == len(TEXTS) and max(sizes) > 1 and max(sizes) <= 16


def test_batch_failure_reaches_every_waiter():
    def broken(version, normalised, raw):
        raise ValueError("model exploded")

    batcher = MicroBatcher(broken, max_batch_size=8, max_wait_ms=20)
    errors = []

    def call():
        try:
            batcher.score("v1", "x", "x")
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 4


def test_full_queue_is_overloaded_at_once():
    entered, gate = threading.Event(), threading.Event()

    def blocking(version, normalised, raw):
        entered.set()
        gate.wait(5)
        return [0.5] * len(raw)

    batcher = MicroBatcher(blocking, max_batch_size=1, max_wait_ms=0, max_queue=1)
    first = threading.Thread(target=lambda: batcher.score("v1", "a", "a"))
    first.start()
    assert entered.wait(5)  # the batching thread took the first text and is busy scoring it
    second = threading.Thread(target=lambda: batcher.score("v1", "b", "b"))
    second.start()
    deadline = time.time() + 5
    while not batcher._queue.qsize() and time.time() < deadline:  # the second text fills the queue
        time.sleep(0.001)
    with pytest.raises(OverloadedError):
        batcher.score("v1", "c", "c")
    gate.set()
    first.join()
    second.join()
