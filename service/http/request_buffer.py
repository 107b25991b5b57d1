"""Is a buffered HTTP/1.1 request complete? Framing only, so the worker can hold a request until it is.

The gunicorn worker (`wsgi_server`) reads each connection's bytes in its event loop, without a
thread, and hands the request to a thread only once it is whole: a client that sends slowly, or not
at all, then costs a socket and some memory, never a thread. This module decides "whole" from the
bytes alone: the end of the headers, then `Content-Length` bytes or the chunked terminator. Anything
unusual (malformed framing, oversize header block) is handed on as it is, so that gunicorn's own
parser, which is strict, refuses it with its proper status.
"""

from __future__ import annotations

import enum
import re


class Framing(enum.Enum):
    NEED_MORE = "need_more"  # keep reading
    COMPLETE = "complete"  # the request (and possibly the start of the next one) is buffered
    HAND_OFF = "hand_off"  # not ours to judge: let gunicorn's parser answer (400/414/431...)
    TOO_LARGE = "too_large"  # declared or chunked body over the cap: 413 without reading further
    MALFORMED = "malformed"  # broken chunked framing after valid headers: 400 (the app would have run)


_HEADER_END = b"\r\n\r\n"
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n]*)?\r\n")
_EXPECT_CONTINUE = re.compile(rb"\r\nexpect:[ \t]*100-continue[ \t]*(?=\r\n)", re.IGNORECASE)


class PendingRequest:
    """The bytes of one request as they arrive; `feed` says whether it is complete yet."""

    def __init__(self, max_header_bytes: int, max_body_bytes: int) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.data = bytearray()
        self.body_start: int | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.expects_continue = False
        self._chunk_pos = 0  # where the next chunk-size line starts (chunked bodies are scanned once)
        self._chunked_bytes = 0

    def feed(self, data: bytes) -> Framing:
        self.data += data
        if self.body_start is None:
            verdict = self._headers()
            if verdict is not Framing.COMPLETE:
                return verdict
        if self.chunked:
            return self._chunks()
        if len(self.data) - self.body_start >= self.content_length:
            return Framing.COMPLETE
        return Framing.NEED_MORE

    def _headers(self) -> Framing:
        data = self.data
        # A blank line may precede the request line (RFC 9112 2.2); gunicorn copes, so do we.
        end = data.find(_HEADER_END, 0, self.max_header_bytes + 4)
        if end < 0:
            if len(data) > self.max_header_bytes or b"\n\n" in data:
                return Framing.HAND_OFF  # oversize or bare-LF headers: the parser says which error
            return Framing.NEED_MORE
        self.body_start = end + 4
        lengths, codings = [], []
        for line in bytes(data[:end]).split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                return Framing.HAND_OFF
            name = name.strip().lower()
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"transfer-encoding":
                codings.append(value.strip().lower())
        if codings:
            if lengths or codings != [b"chunked"]:
                return Framing.HAND_OFF  # ambiguous or unsupported framing: gunicorn refuses it
            self.chunked = True
            self._chunk_pos = self.body_start
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                return Framing.HAND_OFF
            self.content_length = int(lengths[0])
            if self.content_length > self.max_body_bytes:
                return Framing.TOO_LARGE
        else:
            self.content_length = 0
        self.expects_continue = bool(_EXPECT_CONTINUE.search(data, 0, end + 2))
        return Framing.COMPLETE

    def _chunks(self) -> Framing:
        data = self.data
        while True:
            match = _CHUNK_SIZE.match(data, self._chunk_pos)
            if match is None:
                # Incomplete size line, or a malformed one: a line can't grow past a few bytes.
                if len(data) - self._chunk_pos > 1024 or data.find(b"\r\n", self._chunk_pos) >= 0:
                    return Framing.MALFORMED
                return Framing.NEED_MORE
            size = int(match.group(1), 16)
            if size == 0:
                # Last chunk, then optional trailer fields, then an empty line.
                trailers = match.end()
                if data[trailers : trailers + 2] == b"\r\n":
                    return Framing.COMPLETE
                if data.find(_HEADER_END, trailers - 2) >= 0:
                    return Framing.COMPLETE
                if len(data) - trailers > self.max_header_bytes:
                    return Framing.HAND_OFF
                return Framing.NEED_MORE
            self._chunked_bytes += size
            if self._chunked_bytes > self.max_body_bytes:
                return Framing.TOO_LARGE
            next_chunk = match.end() + size + 2
            if len(data) < next_chunk:
                self._chunked_bytes -= size  # counted again when the whole chunk is here
                return Framing.NEED_MORE
            if data[next_chunk - 2 : next_chunk] != b"\r\n":
                return Framing.MALFORMED  # a chunk longer than its size said
            self._chunk_pos = next_chunk

    def awaiting_body(self) -> bool:
        """Headers are in and the body has not started: the moment to answer `100 Continue`."""
        return self.body_start is not None and len(self.data) == self.body_start

    def without_expect(self) -> bytes:
        """The request with its `Expect: 100-continue` removed: we already answered it, and the
        parser would otherwise send a second `100 Continue` to the client."""
        head = bytes(self.data[: self.body_start])
        return _EXPECT_CONTINUE.sub(b"", head, count=1) + bytes(self.data[self.body_start :])
