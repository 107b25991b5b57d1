"""gunicorn extension points that toxiserve plugs in from gunicorn.conf.py: the worker class and logger."""

from __future__ import annotations

import errno
import math
import socket
import sys
import time
from functools import partial
from selectors import EVENT_READ

from gunicorn import util as gunicorn_util
from gunicorn.glogging import Logger
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from service import errors
from service.admission.backpressure import stamp_enqueued, start_handling
from service.http.raw_errors import raw_error_response
from service.http.request_buffer import Framing, PendingRequest
from service.observability import metrics
from shared_features.errors import ToxiserveError

RECV_BYTES = 256 * 1024
MAX_READ_PER_WAKEUP = 4 * 1024 * 1024
MIN_BYTES_PER_SECOND = 64 * 1024  # each byte received extends a request's read deadline by 1/this s
# Buffered request bytes one worker holds at most, summed over its connections: a crowd of clients
# that each send most of a large body and then stall must not exhaust memory.
BUFFER_BUDGET_BYTES = 64 * 1024 * 1024
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_MAX_BODY = 4 * 1024 * 1024
# Estimated cost of a request beyond its characters (parsing, checks, logging, metrics): ~0.2 ms measured.
REQUEST_OVERHEAD_SECONDS = 0.0003
LINGER_SECONDS = 2.0  # how long a refused connection is drained before it is closed


_format_http_date = gunicorn_util.http_date
_http_date_of_second: tuple[int, str] = (-1, "")


def http_date_once_a_second(timestamp: float | None = None) -> str:
    """gunicorn's `http_date`, formatted once a second for the current time: gunicorn formats every
    response's Date header with email.utils (3 % of a worker's GIL time under load, py-spy --gil),
    and the header has a resolution of one second. The same text, as it is the same second."""
    global _http_date_of_second
    if timestamp is not None:
        return _format_http_date(timestamp)
    second = int(time.time())
    cached = _http_date_of_second  # one read: another thread may replace it meanwhile
    if cached[0] != second:
        cached = _http_date_of_second = (second, _format_http_date(second))
    return cached[1]


class AppLogsRequestsLogger(Logger):
    """gunicorn's logger without its access log: the app writes the one JSON line per request itself.

    With `logconfig_dict` set, gunicorn considers access logging on and builds the access-log atoms
    for every request only for a disabled logger to drop them: ~8 % of a worker's CPU under load.
    """

    def access(self, resp, req, environ, request_time) -> None:
        return None


class DeadlineSocket(socket.socket):
    """A client socket whose blocking mode has a timeout: gunicorn puts sockets in blocking mode
    for its threads, and a blocked read or write must end (a client that stops reading its answer,
    or framing we handed on unjudged) instead of holding a thread for ever."""

    io_timeout = DEFAULT_READ_TIMEOUT

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(self.io_timeout)
        else:
            super().setblocking(False)


# gunicorn's parse errors, as errors of the service's one hierarchy (and its JSON error contract).
_PARSE_ERRORS: tuple[tuple[type[Exception], type[ToxiserveError], str], ...] = (
    (http_errors.LimitRequestLine, errors.UriTooLongError, "request line is longer than the server accepts"),
    (
        http_errors.LimitRequestHeaders,
        errors.HeadersTooLargeError,
        "request headers are larger than the server accepts",
    ),
    (http_errors.ExpectationFailed, errors.ExpectationFailedError, "only 'Expect: 100-continue' is supported"),
    (http_errors.UnsupportedTransferCoding, errors.TransferCodingError, "only chunked transfer coding is supported"),
    (http_errors.ForbiddenProxyRequest, errors.ForbiddenError, "request forbidden"),
    (http_errors.ParseException, errors.MalformedRequestError, "malformed HTTP request"),
)


class QueueTimedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, changed for a CPU-bound app that faces hostile clients:

    - **A thread gets a request only once it is complete.** The event loop reads each connection's
      bytes without a thread until the headers and the whole body are in (`request_buffer`), so
      slow or silent clients cannot hold the threads that serve others. A request must arrive
      within the read timeout from its first byte, plus a second per 64 KiB received (408
      otherwise); a new connection that sends nothing closes after the read timeout; bodies over
      the cap are refused with 413 before they are read, chunked ones included; and the bytes a
      worker buffers are bounded (503 past the budget).
    - gunicorn's own refusals (malformed request line, oversize headers or URL) are JSON bodies of
      the service's error contract, not HTML pages.
    - It records how long each request waited for a thread, so the app can shed requests that
      queued too long (`backpressure.queue_wait`).
    - It accepts new connections only while it has a free thread. All workers poll one listening
      socket, and whichever wakes first takes a connection: a burst of new connections could land
      on one worker while the others idle, and keep-alive keeps them there. A busy worker leaves
      new connections in the kernel's backlog for the next free thread, but still takes one every
      BUSY_ACCEPT_INTERVAL, so a saturated service cannot starve new clients.
    """

    BUSY_ACCEPT_INTERVAL = 0.05

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests_queued = 0  # handed to the pool and not finished; touched by the main thread only
        self.last_accept = 0.0
        self.reading: dict[TConn, float] = {}  # connections being buffered -> their deadline
        self.buffered_bytes = 0
        self.lingering: dict[TConn, float] = {}  # refused connections, drained until closed -> deadline
        self.work_ahead = 0.0  # estimated seconds of scoring handed to the pool and not finished

    @classmethod
    def check_config(cls, cfg, log) -> None:
        """Refuse gunicorn's TLS options at start: this worker reads every request off the raw socket
        before a thread sees it, so it would never speak TLS, and every client's handshake would fail
        (once logged as a 408)."""
        if cfg.is_ssl:
            sys.exit(
                "Error: toxiserve's worker does not terminate TLS (--certfile/--keyfile were given): "
                "terminate TLS at a proxy or load balancer in front of it (HAProxy, nginx, an ingress)"
            )
        super().check_config(cfg, log)

    def init_process(self) -> None:
        # The preloaded app (gunicorn hands the same object to load_wsgi); its settings, where it is ours.
        self.service = service = getattr(self.app.wsgi(), "extensions", {}).get("toxiserve")
        settings = getattr(service, "settings", None)
        self.max_queue_wait = getattr(settings, "max_queue_wait", None)
        self.read_timeout = getattr(settings, "request_read_timeout", DEFAULT_READ_TIMEOUT)
        self.max_body = getattr(settings, "max_content_length", DEFAULT_MAX_BODY)
        # As gunicorn's parser bounds them: request line plus the header block.
        self.max_header_bytes = self.cfg.limit_request_line + self.cfg.limit_request_fields * (
            self.cfg.limit_request_field_size + 2
        )
        # A silent connection costs a socket, not a thread: it gets the whole read timeout (or the
        # keep-alive time, if longer) to send its first byte; a client on a busy host can be slow.
        self.first_byte_timeout = max(self.cfg.keepalive, self.read_timeout)
        DeadlineSocket.io_timeout = self.read_timeout
        gunicorn_util.http_date = http_date_once_a_second  # this worker's responses; the module's at call time
        super().init_process()

    # -- connections in, requests to threads -------------------------------------------------------

    def accept(self, listener) -> None:
        # A readiness event for the listener can still be in the batch the poller returned when a
        # stop closed this worker's copy of it (set_accept_enabled below): gunicorn's socket wrapper
        # then holds None, and accepting raised AttributeError, exiting the worker with 255.
        if getattr(listener, "sock", listener) is None:
            return
        self.last_accept = time.monotonic()
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        sock = DeadlineSocket(client.family, client.type, client.proto, fileno=client.detach())
        self.nr_conns += 1
        self._start_reading(TConn(self.cfg, sock, address, listener.getsockname()))

    def enqueue_req(self, conn) -> None:
        # gunicorn calls this for a kept-alive connection that became readable, and for one whose
        # buffer already holds the start of a pipelined request: both are read to completion first.
        if not getattr(conn, "toxiserve_complete", False):
            self._start_reading(conn)
            return
        conn.toxiserve_complete = False
        stamp_enqueued(conn)
        self.requests_queued += 1
        super().enqueue_req(conn)
        self._update_accepting()

    def on_client_socket_readable(self, conn, client) -> None:
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_reading(conn)

    def _start_reading(self, conn) -> None:
        conn.sock.setblocking(False)
        pending = PendingRequest(self.max_header_bytes, self.max_body)
        conn.toxiserve_pending = pending
        # A deadline for the first byte; the request's own clock starts with it (`_advance`).
        self.reading[conn] = time.monotonic() + self.first_byte_timeout
        leftover = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        self.poller.register(conn.sock, EVENT_READ, partial(self._on_readable, conn))
        if leftover:
            self._advance(conn, pending, leftover)

    def _on_readable(self, conn, _sock) -> None:
        # Drain what the socket holds in one wake-up: under load this thread waits for the GIL
        # behind the scoring threads each time it wakes, so fewer wake-ups per body matter.
        chunks, received, closed = [], 0, False
        while received < MAX_READ_PER_WAKEUP:
            try:
                chunk = conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
            received += len(chunk)
        if not chunks:  # the client closed (or reset) before its request was complete
            self._drop(conn)
            return
        data = b"".join(chunks)
        try:
            if not self._advance(conn, conn.toxiserve_pending, data) and closed:
                self._drop(conn)  # half a request, then the client went away
        except Exception:  # never let one connection take the worker's event loop down
            self.log.exception("error while reading a request")
            self._drop(conn)

    def _advance(self, conn, pending: PendingRequest, data: bytes) -> bool:
        """Feed bytes; True once the connection has left the reading state (dispatched or refused)."""
        if not pending.data:
            self.reading[conn] = time.monotonic() + self.read_timeout  # the request's clock starts now
        else:
            # A minimum rate, not a fixed time: a large body sent at a fair rate to a busy server
            # gets the time it needs, a trickle gains next to nothing.
            self.reading[conn] += len(data) / MIN_BYTES_PER_SECOND
        self.buffered_bytes += len(data)
        framing = pending.feed(data)
        if framing is Framing.NEED_MORE:
            if self.buffered_bytes > BUFFER_BUDGET_BYTES:
                self._refuse(
                    conn,
                    503,
                    "OVERLOADED",
                    "server is buffering too much request data; retry shortly",
                    {"Retry-After": "1"},
                )
                return True
            if pending.expects_continue and pending.awaiting_body():
                # The client waits for this before it sends the body (RFC 9110 10.1.1).
                self._send_quietly(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
            return False
        if framing is Framing.TOO_LARGE:
            self._refuse(conn, errors.PayloadTooLargeError("request body is larger than the configured limit"))
            return True
        if framing is Framing.MALFORMED:
            self._refuse(conn, errors.MalformedRequestError("malformed chunked request body"))
            return True
        self._stop_reading(conn)
        request_bytes = pending.without_expect() if pending.expects_continue else bytes(pending.data)
        cost = self._estimated_seconds(len(request_bytes))
        if (
            self.max_queue_wait
            and self.requests_queued >= self.cfg.threads
            and self.work_ahead > self.max_queue_wait
            and request_bytes.startswith(b"POST ")  # scoring; probes, metrics and docs are GETs
        ):
            # Every thread is taken and the work ahead (held or queued here) outlasts the queue-wait
            # bound: this request cannot start soon. Say so now, not after it waited in the queue.
            metrics.OVERLOADED.inc()
            overloaded = errors.OverloadedError("this worker has more work queued than it can start soon")
            self._refuse(conn, overloaded, max(1, math.ceil(self.work_ahead)))
            return True
        self.work_ahead += cost
        conn.toxiserve_cost = cost
        conn.toxiserve_prefix = request_bytes
        conn.toxiserve_complete = True
        conn.data_ready = True  # gunicorn must not wait for data that is already here
        self.enqueue_req(conn)
        return True

    def _unwatch(self, conn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass  # not registered (its bytes came from gunicorn's read-ahead), or already closed

    def _stop_reading(self, conn) -> None:
        self._unwatch(conn)
        self.reading.pop(conn, None)
        pending = getattr(conn, "toxiserve_pending", None)
        if pending is not None:
            self.buffered_bytes -= len(pending.data)
            conn.toxiserve_pending = None

    def _drop(self, conn) -> None:
        self._stop_reading(conn)
        self.lingering.pop(conn, None)
        self.nr_conns -= 1
        conn.close()

    def _refuse(self, conn, error: ToxiserveError, retry_after: int | None = None) -> None:
        """Answer a request the app never sees, then close: its body may not be (fully) read.

        A lingering close: stop sending, then read and discard for a moment before closing, since
        closing with unread bytes makes the kernel reset the connection, and the client may lose
        the answer it has not read yet.
        """
        status, error_code = error.status, error.error_code
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        metrics.child(metrics.WORKER_REFUSALS, str(status), error_code).inc()
        self.log.warning("refused a request before the app: %s %s", status, error_code)
        self._stop_reading(conn)
        self._send_quietly(conn, raw_error_response(status, error_code, error.message, headers))
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        self.lingering[conn] = time.monotonic() + LINGER_SECONDS
        self.poller.register(conn.sock, EVENT_READ, partial(self._on_lingering_readable, conn))

    def _on_lingering_readable(self, conn, _sock) -> None:
        try:
            if conn.sock.recv(RECV_BYTES):
                return  # discarded
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._drop(conn)

    def _estimated_seconds(self, request_bytes: int) -> float:
        """A request's scoring time, from its size and what scoring cost per character so far in this
        process (the costliest loaded version: which one it asks for is not parsed yet)."""
        inference = getattr(self.service, "inference", None)
        per_char = inference.max_seconds_per_char if inference is not None else 0.0
        return REQUEST_OVERHEAD_SECONDS + request_bytes * per_char

    @staticmethod
    def _send_quietly(conn, payload: bytes) -> None:
        try:
            conn.sock.send(payload)  # small enough for an empty socket buffer; a slow reader loses it
        except OSError:
            pass

    def murder_pending(self) -> None:
        """Every loop turn (at least once a second): end requests that missed their read deadline."""
        super().murder_pending()
        now = time.monotonic()
        for conn, deadline in list(self.lingering.items()):
            if deadline <= now:
                self._drop(conn)
        for conn, deadline in list(self.reading.items()):
            if not self.alive and not conn.toxiserve_pending.data:
                # Stopping: an idle connection gets the moment gunicorn gives kept-alive ones.
                deadline = self.reading[conn] = min(deadline, now + STOP_KEEPALIVE_LINGER)
            if deadline <= now:
                if conn.toxiserve_pending.data:
                    self._refuse(conn, errors.RequestTimeoutError("request not received within the read timeout"))
                else:
                    self._drop(conn)

    # -- threads -----------------------------------------------------------------------------------

    def handle(self, conn):
        start_handling(conn)
        prefix = getattr(conn, "toxiserve_prefix", None)
        if prefix is not None:
            conn.toxiserve_prefix = None
            conn.init()
            conn.parser.unreader.unread(prefix)
        return super().handle(conn)

    def finish_request(self, conn, fs) -> None:
        self.requests_queued -= 1
        self.work_ahead = max(0.0, self.work_ahead - getattr(conn, "toxiserve_cost", 0.0))
        super().finish_request(conn, fs)
        self._update_accepting()

    def handle_error(self, req, client, addr, exc) -> None:
        """gunicorn's refusals as the JSON error contract (gunicorn writes an HTML page)."""
        known = next((entry for entry in _PARSE_ERRORS if isinstance(exc, entry[0])), None)
        if known is not None:
            _, error_class, message = known
            status, error_code = error_class.status, error_class.error_code
            self.log.warning("invalid request: %s %s (%s)", status, error_code, type(exc).__name__)
        else:
            self.log.exception("error handling request")
            status, error_code, message = 500, "INTERNAL_ERROR", "internal error"
        metrics.child(metrics.WORKER_REFUSALS, str(status), error_code).inc()
        try:
            client.sendall(raw_error_response(status, error_code, message))
        except OSError:
            self.log.debug("failed to send the error response")

    # -- accepting ---------------------------------------------------------------------------------

    def _update_accepting(self) -> None:
        # run() re-checks this every loop; doing it here too reacts the moment a thread frees up
        self.set_accept_enabled(self.alive and self.nr_conns < self.worker_connections)

    def set_accept_enabled(self, enabled: bool) -> None:
        has_free_thread = self.requests_queued < self.cfg.threads
        super().set_accept_enabled(
            enabled and (has_free_thread or time.monotonic() - self.last_accept > self.BUSY_ACCEPT_INTERVAL)
        )
        if not self.alive:
            # Stopping (SIGTERM, recycling): close this worker's copy of the listening socket now,
            # not when the worker exits. Once the master (which closes its own on SIGTERM) and every
            # stopping worker have, new connections are refused at once, as gRPC refuses new RPCs
            # while draining, instead of waiting in the backlog to be reset. A reload or a recycle
            # leaves the socket open in the master and the other workers.
            for listener in self.sockets:
                listener.close()
