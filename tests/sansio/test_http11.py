"""The sans-IO HTTP/1.1 response reader, alone: framing, every byte split, and every error."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multitask._http11 import (
    END,
    MAX_HEAD_BYTES,
    MAX_LINE_BYTES,
    Head,
    ProtocolError,
    ResponseReader,
    render_request_head,
)

CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b'e\r\ndata: {"a":1}\n\r\n'
    b"11;ext=1\r\ndata: [DONE]\n\n...\r\n"
    b"0\r\n"
    b"\r\n"
)
CHUNKED_BODY = b'data: {"a":1}\ndata: [DONE]\n\n...'


def read(message: bytes, splits: list[int] | None = None, *, method: str = "POST") -> tuple:
    """Feed `message` cut at `splits`; return (head, body, ended, reader)."""
    reader = ResponseReader(method)
    events = []
    cuts = [0, *(splits or []), len(message)]
    for start, end in itertools.pairwise(cuts):
        events += reader.receive(message[start:end])
    heads = [e for e in events if isinstance(e, Head)]
    body = b"".join(e for e in events if isinstance(e, bytes))
    assert all(isinstance(e, bytes) for e in events[1:-1])  # the head first, END last
    return (heads[0] if heads else None), body, END in events, reader


def test_a_chunked_response_in_one_piece() -> None:
    head, body, ended, reader = read(CHUNKED)
    assert head == Head(
        200,
        b"OK",
        [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked")],
    )
    assert body == CHUNKED_BODY
    assert ended
    assert reader.done
    assert reader.reusable
    assert reader.received == len(CHUNKED_BODY)


@pytest.mark.parametrize("cut", range(1, len(CHUNKED)))
def test_a_chunked_response_split_anywhere(cut: int) -> None:
    _, body, ended, reader = read(CHUNKED, [cut])
    assert (body, ended, reader.reusable) == (CHUNKED_BODY, True, True)


def test_a_chunked_response_one_byte_at_a_time() -> None:
    _, body, ended, reader = read(CHUNKED, list(range(1, len(CHUNKED))))
    assert (body, ended, reader.reusable) == (CHUNKED_BODY, True, True)


def test_bare_lf_line_ends_are_read() -> None:
    message = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n"
    for cut in range(1, len(message)):
        _, body, ended, _ = read(message, [cut])
        assert (body, ended) == (b"abc", True)


def test_trailers_are_read_and_dropped() -> None:
    message = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n"
    _, body, ended, reader = read(message)
    assert (body, ended, reader.reusable) == (b"hi", True, True)


@given(
    body=st.binary(max_size=400),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=20),
    splits=st.lists(st.integers(0, 2000), max_size=12),
)
def test_any_chunking_and_any_split_give_the_body(
    body: bytes, sizes: list[int], splits: list[int]
) -> None:
    chunks, i, k = [], 0, 0
    while i < len(body):
        size = sizes[k % len(sizes)]
        chunks.append(
            b"%x\r\n%s\r\n" % (size if i + size <= len(body) else len(body) - i, body[i : i + size])
        )
        i, k = i + size, k + 1
    message = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"".join(chunks)
    message += b"0\r\n\r\n"
    cuts = sorted({s % (len(message) + 1) for s in splits})
    _, got, ended, reader = read(message, cuts)
    assert (got, ended, reader.reusable) == (body, True, True)


@given(
    body=st.binary(max_size=400),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=20),
    upper=st.booleans(),
)
def test_one_chunk_per_read_gives_the_body(body: bytes, sizes: list[int], upper: bool) -> None:
    """Each read one whole chunk (how a streamed body mostly arrives): the same as any split."""
    pieces, i, k = [], 0, 0
    while i < len(body):
        size = min(sizes[k % len(sizes)], len(body) - i)
        line = (b"%X" if upper else b"%x") % size
        pieces.append(b"%s\r\n%s\r\n" % (line, body[i : i + size]))
        i, k = i + size, k + 1
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    message = head + b"".join(pieces) + b"0\r\n\r\n"
    cuts = list(itertools.accumulate([len(head), *map(len, pieces)]))
    _, got, ended, reader = read(message, cuts)
    assert (got, ended, reader.reusable) == (body, True, True)
    assert read(message, cuts)[1] == read(message, list(range(len(message))))[1]


def test_a_chunk_alone_in_a_read_with_an_extension_or_a_bare_lf() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    for piece in (b"3;x=y\r\nabc\r\n", b"3\nabc\r\n", b"3\r\nabc\n", b"03\r\nabc\r\n"):
        message = head + piece + b"0\r\n\r\n"
        _, got, ended, _ = read(message, [len(head), len(head) + len(piece)])
        assert (got, ended) == (b"abc", True), piece


def test_content_length() -> None:
    message = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!"
    for cut in range(1, len(message)):
        head, body, ended, reader = read(message, [cut])
        assert head is not None
        assert head.status == 401
        assert head.reason == b"Unauthorized"
        assert (body, ended, reader.reusable) == (b"nope!", True, True)


def test_bytes_after_the_body_make_the_connection_unusable() -> None:
    _, body, ended, reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK")
    assert (body, ended, reader.reusable) == (b"ok", True, False)
    _, _, ended, reader = read(CHUNKED + b"JUNK")
    assert ended
    assert not reader.reusable


def test_a_body_that_runs_until_the_connection_closes() -> None:
    reader = ResponseReader()
    events = reader.receive(b"HTTP/1.1 200 OK\r\n\r\nsome")
    events += reader.receive(b" more")
    assert events[1:] == [b"some", b" more"]
    assert reader.receive_eof() == [END]
    assert reader.done
    assert not reader.reusable


@pytest.mark.parametrize(
    ("message", "method"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", "POST"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", "GET"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD"),
    ],
)
def test_responses_without_a_body(message: bytes, method: str) -> None:
    head, body, ended, reader = read(message, method=method)
    assert head is not None
    assert body == b""
    assert ended
    assert reader.reusable


def test_informational_responses_are_skipped() -> None:
    message = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
    message += b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    for cut in range(1, len(message)):
        head, body, ended, _ = read(message, [cut])
        assert head is not None
        assert head.status == 200
        assert (body, ended) == (b"ok", True)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
        # both framings: a smuggling attempt, or a broken proxy; chunked wins, no reuse
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
    ],
)
def test_connections_that_may_not_be_reused(head: bytes) -> None:
    message = head if head.endswith(b"0\r\n\r\n") else head + b"ok"
    _, body, ended, reader = read(message)
    assert (body, ended, reader.reusable) == (b"ok", True, False)


def test_repeated_equal_content_lengths_are_one() -> None:
    _, body, _, _ = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok")
    assert body == b"ok"


def test_header_names_are_lower_cased_values_trimmed_and_repeats_kept() -> None:
    head, _, _, _ = read(
        b"HTTP/1.1 200 OK\r\nX-A:  1 \r\nx-a:\t2\r\nEmpty:\r\nContent-Length: 0\r\n\r\n"
    )
    assert head is not None
    assert head.headers == [
        (b"x-a", b"1"),
        (b"x-a", b"2"),
        (b"empty", b""),
        (b"content-length", b"0"),
    ]


def test_a_status_line_without_a_reason() -> None:
    head, _, _, _ = read(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
    assert head is not None
    assert (head.status, head.reason) == (200, b"")


def receive_then_more(reader: ResponseReader, message: bytes) -> None:
    """`message`, then a call after it: the error comes from one or the other."""
    reader.receive(message)
    reader.receive(b"")


@pytest.mark.parametrize(
    ("message", "says"),
    [
        (b"HTP/1.1 200 OK\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/2 200 OK\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x response"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nbad name: 1\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\n  folded\r\nX: 1\r\n\r\n", "folded header line before any"),
        (b"HTTP/1.1 200 OK\r\nX: 1\r\n\x01folded\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nX: 1\r\n folded\x7f\r\n\r\n", "control character"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Enc"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "unsupported Transfer-Encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "unsupported Transfer-Encoding",
        ),
        (b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n", "control character"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", "invalid chunk size"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n",
            "invalid chunk size",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n",
            "not followed by CRLF",
        ),
    ],
)
def test_malformed_responses_say_what_is_wrong(message: bytes, says: str) -> None:
    reader = ResponseReader()
    with pytest.raises(ProtocolError, match=says):  # raised by this call or the next
        receive_then_more(reader, message)
    with pytest.raises(ProtocolError, match=says):  # and by every call after it
        reader.receive_eof()
    assert not reader.reusable


# -- an error after what came before it --------------------------------------------------------

BAD_CHUNK = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"6\r\nhello\n\r\n"
    b"7\r\nworld!\n\r\n"
    b"zz\r\n"
    b"3\r\nnot\r\n0\r\n\r\n"
)


def test_body_framed_before_a_bad_chunk_size_in_the_same_read_is_returned() -> None:
    reader = ResponseReader("POST")
    reader.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert reader.receive(b"6\r\nhello\n\r\nzz\r\n") == [b"hello\n"]
    assert isinstance(reader.error, ProtocolError)  # the caller knows not to wait for more
    with pytest.raises(ProtocolError, match="invalid chunk size"):
        reader.receive(b"3\r\nnot\r\n")
    with pytest.raises(ProtocolError, match="invalid chunk size"):
        reader.receive_eof()
    assert not reader.reusable


@pytest.mark.parametrize("pieces", [1, 2, 97, len(BAD_CHUNK)], ids=lambda n: f"{n}-byte")
def test_everything_framed_before_a_bad_chunk_size_is_returned_at_any_split(pieces: int) -> None:
    for offset in range(pieces if pieces < len(BAD_CHUNK) else 1):
        cuts = [0, *range(offset or pieces, len(BAD_CHUNK), pieces), len(BAD_CHUNK)]
        reader = ResponseReader()
        events: list[object] = []

        def receive_pieces(
            reader: ResponseReader = reader, cuts: list[int] = cuts, events: list[object] = events
        ) -> None:
            for start, end in itertools.pairwise(cuts):
                events.extend(reader.receive(BAD_CHUNK[start:end]))
                if reader.error is not None:
                    reader.receive(b"")  # raised at once: nothing more is read

        with pytest.raises(ProtocolError, match="invalid chunk size"):
            receive_pieces()
        body = b"".join(e for e in events if isinstance(e, bytes))
        assert body == b"hello\nworld!\n"
        assert END not in events


def test_the_head_and_body_before_a_bad_chunk_size_come_out_of_one_read() -> None:
    reader = ResponseReader()
    events = reader.receive(BAD_CHUNK)
    assert [type(e) for e in events] == [Head, bytes, bytes]
    assert reader.error is not None
    assert reader.head is not None


# -- obsolete line folding ---------------------------------------------------------------------


def test_a_folded_header_line_is_joined_with_a_space() -> None:
    message = b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\t c \t\r\nContent-Length: 0\r\n\r\n"
    for cut in range(1, len(message)):
        head, body, ended, reader = read(message, [cut])
        assert head is not None
        assert head.headers == [(b"x", b"a b c"), (b"content-length", b"0")]
        assert (body, ended, reader.reusable) == (b"", True, True)


def test_a_folded_content_length_frames_the_body() -> None:
    message = b"HTTP/1.1 200 OK\r\nContent-Length:\r\n 3\r\n\r\nabc"
    head, body, ended, _ = read(message)
    assert head is not None
    assert head.headers == [(b"content-length", b"3")]
    assert (body, ended) == (b"abc", True)


def test_a_head_larger_than_the_limit() -> None:
    reader = ResponseReader()
    reader.receive(b"HTTP/1.1 200 OK\r\n")
    for _ in range(MAX_HEAD_BYTES // 1000):
        reader.receive(b"X-Pad: " + b"a" * 991 + b"\r\n")
    with pytest.raises(ProtocolError, match=f"larger than {MAX_HEAD_BYTES}"):
        reader.receive(b"X-Pad: " + b"a" * 991 + b"\r\n")
    with pytest.raises(ProtocolError, match="larger than"):  # and when it arrives whole
        ResponseReader().receive(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n")


def test_a_chunk_line_and_trailers_longer_than_the_limit() -> None:
    reader = ResponseReader()
    reader.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;")
    with pytest.raises(ProtocolError, match="chunk-size line longer"):
        reader.receive(b"x" * (MAX_LINE_BYTES + 1))
    reader = ResponseReader()
    reader.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
    for _ in range(MAX_LINE_BYTES // 1007):
        reader.receive(b"X-T: " + b"a" * 1000 + b"\r\n")
    with pytest.raises(ProtocolError, match="trailer section longer"):
        reader.receive(b"X-T: " + b"a" * 1000 + b"\r\n")


@pytest.mark.parametrize(
    ("sent", "says"),
    [
        (b"", "without sending a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "in the middle of the response head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "after 3 of 10 body bytes"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "chunked body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", "no final chunk"),
    ],
)
def test_a_connection_closed_too_early(sent: bytes, says: str) -> None:
    reader = ResponseReader()
    reader.receive(sent)
    with pytest.raises(ProtocolError, match=says):
        reader.receive_eof()


def test_eof_after_a_complete_response_is_nothing() -> None:
    reader = ResponseReader()
    reader.receive(CHUNKED)
    assert reader.receive_eof() == []


def test_render_request_head() -> None:
    head = render_request_head(
        b"POST", b"/v1/chat/completions?x=1", [(b"Host", b"api"), (b"Content-Length", b"2")]
    )
    assert head == (
        b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: api\r\nContent-Length: 2\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("method", "target", "headers", "says"),
    [
        (b"POST", b"/a b", [], "target"),
        (b"POST", b"/a\r\nX: 1", [], "target"),
        (b"POST", b"", [], "target"),
        (b"PO ST", b"/", [], "method"),
        (b"POST", b"/", [(b"X\r\nY", b"1")], "header name"),
        (b"POST", b"/", [(b"X", b"1\r\nEvil: yes")], "CR, LF or NUL"),
        (b"POST", b"/", [(b"X", b"1\x00")], "CR, LF or NUL"),
    ],
)
def test_render_request_head_refuses_smuggled_lines(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        render_request_head(method, target, headers)
