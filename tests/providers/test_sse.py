"""The server-sent-event reader both OpenAI stream readers use (providers/llm/sse.py)."""

from __future__ import annotations

from bridge.providers.llm.sse import SseData


def _events(lines: list[str]) -> list[str]:
    sse = SseData("data:", " ", "\n")
    out = [d for d in (sse.line(line) for line in lines) if d is not None]
    tail = sse.end()
    return out + ([tail] if tail is not None else [])


def test_events_per_the_spec() -> None:
    lines = [
        ": a comment", "event: x", "id: 7", "data: {\"a\":1}", "",  # one event
        "", "",  # blank lines without data dispatch nothing
        "data:no-space", "data:  two spaces", "",  # one leading space is dropped, not two
        "data: last, no blank line after it",
    ]
    assert _events(lines) == ['{"a":1}', "no-space\n two spaces", "last, no blank line after it"]


def test_bytes_lines_read_the_same() -> None:
    sse = SseData(b"data:", b" ", b"\n")
    assert sse.line(b"data: [DONE]") is None
    assert sse.line(b"") == b"[DONE]"
    assert sse.end() is None
