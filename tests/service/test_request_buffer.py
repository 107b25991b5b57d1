"""The framing check that decides when a buffered request is complete (service.http.request_buffer)."""

import pytest

from service.http.request_buffer import Framing, PendingRequest

HEAD = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"


def pending(max_body=100):
    return PendingRequest(max_header_bytes=8192, max_body_bytes=max_body)


def feed_bytewise(request: PendingRequest, data: bytes) -> list[Framing]:
    return [request.feed(data[i : i + 1]) for i in range(len(data))]


def test_content_length_body_completes_on_its_last_byte():
    data = HEAD + b"Content-Length: 5\r\n\r\nhello"
    verdicts = feed_bytewise(pending(), data)
    assert verdicts[:-1] == [Framing.NEED_MORE] * (len(data) - 1)
    assert verdicts[-1] is Framing.COMPLETE


def test_request_without_body_completes_with_its_headers():
    assert pending().feed(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n") is Framing.COMPLETE


def test_headers_without_end_wait():
    assert pending().feed(HEAD) is Framing.NEED_MORE


def test_declared_length_over_the_cap_is_refused_before_the_body():
    assert pending(max_body=100).feed(HEAD + b"Content-Length: 101\r\n\r\n") is Framing.TOO_LARGE


def test_chunked_body_completes_on_its_terminator_and_handles_split_chunks():
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    data = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body
    verdicts = feed_bytewise(pending(), data)
    assert verdicts[-1] is Framing.COMPLETE
    assert set(verdicts[:-1]) == {Framing.NEED_MORE}


def test_chunked_body_with_trailers_completes():
    data = HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
    assert feed_bytewise(pending(), data)[-1] is Framing.COMPLETE


def test_chunked_body_over_the_cap_is_refused_as_soon_as_a_chunk_says_so():
    request = pending(max_body=10)
    assert request.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n") is Framing.NEED_MORE
    assert request.feed(b"8\r\n") is Framing.TOO_LARGE


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"Content-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"Content-Length: -1\r\n\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n\r\n",
        b"No colon here\r\n\r\n",
    ],
)
def test_ambiguous_framing_is_handed_to_gunicorns_parser(headers):
    assert pending().feed(HEAD + headers) is Framing.HAND_OFF


def test_malformed_chunk_size_is_refused_as_malformed():
    assert pending().feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n") is Framing.MALFORMED


def test_oversize_header_block_is_handed_on_for_gunicorn_to_refuse():
    request = PendingRequest(max_header_bytes=100, max_body_bytes=100)
    assert request.feed(HEAD + b"X-Flood: " + b"a" * 200) is Framing.HAND_OFF


def test_expect_continue_is_noticed_and_removed_before_the_parser_sees_it():
    request = pending()
    assert request.feed(HEAD + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n") is Framing.NEED_MORE
    assert request.expects_continue and request.awaiting_body()
    assert request.feed(b"{}") is Framing.COMPLETE
    assert request.without_expect() == HEAD + b"Content-Length: 2\r\n\r\n{}"


def test_chunk_longer_than_its_declared_size_is_malformed():
    assert pending().feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n") is Framing.MALFORMED
