"""A request's compute budget: scoring stops between chunks once its deadline passed or its client left."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from service.errors import ClientClosedError, DeadlineExceededError
from service.observability import metrics


class Deadline:
    def __init__(self, seconds: float, client_gone: Callable[[], bool] | None = None) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.client_gone = client_gone

    def check(self, client_too: bool = True) -> None:
        """Before a chunk of work: raise (and count) if the rest is not worth doing. Asking the
        socket costs syscalls, so the first chunk (all of a small request) checks the clock only."""
        if time.monotonic() > self.expires_at:
            metrics.child(metrics.ABANDONED_WORK, "deadline").inc()
            error = DeadlineExceededError(f"scoring took longer than the {self.seconds:g} s deadline; send fewer texts")
            error.headers = {"Retry-After": "1"}
            raise error
        if client_too and self.client_gone is not None and self.client_gone():
            metrics.child(metrics.ABANDONED_WORK, "client_gone").inc()
            raise ClientClosedError("the client closed the connection before the answer was ready")


def peer_closed(sock: socket.socket | None) -> Callable[[], bool] | None:
    """A check that the client has closed its end: a zero-byte peek means FIN arrived. The request is
    already fully read (the worker buffers it), so any bytes waiting are a pipelined next request."""
    if sock is None:
        return None

    def gone() -> bool:
        timeout = sock.gettimeout()
        sock.settimeout(0.0)  # a socket with a timeout waits for data before recv: peek without waiting
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(timeout)

    return gone
