"""Local fake cloud providers for tests and benchmarks: one aiohttp app on 127.0.0.1 speaking
Deepgram's live WebSocket, OpenAI's chat-completions SSE and ElevenLabs' HTTP stream and
stream-input WebSocket, with injectable latency, HTTP errors, stalls and dropped sockets.

The real vendor SDKs are pointed at it (see DESIGN.md, Wire notes: Cloud providers); nothing here is mocked
on the client side.
"""

from devkit.fakes.control import Faults, Journal
from devkit.fakes.server import FakeCloud

__all__ = ["FakeCloud", "Faults", "Journal"]
