"""Server-sent events (the HTML spec's event stream): each event's data from a response's
lines. Sans-I/O, shared by the two readers of OpenAI's stream: openai_sse.py (the SDK's httpx
lines, str) and openai_wire.py (aiohttp's, bytes)."""

from __future__ import annotations

from typing import AnyStr, Generic


class SseData(Generic[AnyStr]):
    """Feed each line without its line ending: ``line`` returns an event's data (its ``data:``
    lines joined by newlines) when a blank line dispatches it; ``end`` what is left at the end
    of the body (None: nothing)."""

    def __init__(self, field: AnyStr, space: AnyStr, newline: AnyStr) -> None:
        self._field: AnyStr = field  # "data:" / b"data:"
        self._space: AnyStr = space
        self._newline: AnyStr = newline
        self._parts: list[AnyStr] = []

    def line(self, line: AnyStr) -> AnyStr | None:
        if not line:  # a blank line dispatches the event (one without data is dropped)
            return self.end()
        if line.startswith(self._field):
            value = line[len(self._field):]
            self._parts.append(value[1:] if value.startswith(self._space) else value)
        # ":" comments, event:, id:, retry: carry nothing a chat completion needs
        return None

    def end(self) -> AnyStr | None:
        if not self._parts:
            return None
        data = self._newline.join(self._parts)
        self._parts = []
        return data
