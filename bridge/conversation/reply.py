"""One agent reply in flight: its text (clause by clause), audio, LLM rounds and tool calls."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

from bridge.conversation.clauses import ClauseSplitter
from bridge.conversation.echo import AgentLevels
from bridge.conversation.heard import SpokenText
from bridge.conversation.marks import TurnMarks
from bridge.providers.base import Message, ToolCall

ReplyKind = Literal["llm", "say"]
After = Literal["listen", "hangup", "transfer"]


@dataclass(eq=False)
class Reply:
    id: str
    kind: ReplyKind
    purpose: str  # answer | greeting | reprompt | goodbye | ...
    interruptible: bool
    started: float
    then: After = "listen"
    end_reason: str = ""
    marks: TurnMarks | None = None
    spoken: SpokenText = field(default_factory=SpokenText)
    splitter: ClauseSplitter = field(default_factory=ClauseSplitter)
    levels: AgentLevels = field(default_factory=AgentLevels)
    # LLM rounds
    round: int = 0
    stream_id: str = ""
    llm_active: bool = False
    # The engine alone times its providers (DESIGN.md, Turn contract): each deadline is a
    # clock time, None while nothing is owed. LLM: first token, then each next token.
    llm_deadline: float | None = None
    got_token: bool = False
    round_text: str = ""
    round_tools: list[ToolCall] = field(default_factory=list)
    pending_tools: dict[str, ToolCall] = field(default_factory=dict)
    history_indices: list[int] = field(default_factory=list)  # its assistant messages
    # TTS and playback
    clauses_sent: int = 0
    first_text_at: float | None = None
    audio_ms: float = 0.0
    tts_ended: bool = False
    tts_done: bool = False
    # TTS: the first audio after the first text; later, audio for text it took after its
    # last audio, or (text ended) the next audio or the end
    tts_deadline: float | None = None
    # what the caller has heard, as the leg last reported it (PlaybackProgress), and when
    heard_ms: int = 0
    heard_at: float = 0.0
    playing: bool = False
    cancelled: bool = False
    fallback_played: bool = False
    # Where its user turn sits in the history (-1: no user turn, e.g. a greeting): a split
    # turn merged later cuts the history back to here.
    turn_base: int = -1
    # Preemptive generation: started before the turn was confirmed, on ``preempt_text``. Its
    # audio, the end of its utterance and its tool calls wait until the turn is confirmed.
    held: bool = False
    preempt_text: str = ""
    held_audio: list[bytes] = field(default_factory=list)
    held_end: bool = False
    held_done: bool = False  # an LLM round ended while held (its tools still to run)

    def add_audio(self, pcm: bytes) -> None:
        self.audio_ms += len(pcm) / 16  # 8 kHz s16: 16 bytes a millisecond
        self.levels.add(pcm)


_WORDS = re.compile(r"\S+")


def truncate_history(
    history: list[Message], reply: Reply, heard_text: str, unfinished_text: str
) -> list[Message]:
    """The history with the reply's assistant messages cut down to the words the caller heard.

    Messages carrying tool calls stay (their tool results follow them) with their text cut;
    text-only messages that end up empty are dropped; the words of an unfinished LLM round
    that were heard are appended as a last assistant message.
    """
    remaining = len(_WORDS.findall(heard_text))
    drop: set[int] = set()
    out = list(history)
    for index in reply.history_indices:
        msg = out[index]
        words = _WORDS.findall(msg.content)
        kept = " ".join(words[:remaining])
        remaining = max(0, remaining - len(words))
        if not kept and not msg.tool_calls:
            drop.add(index)
        else:
            out[index] = dataclasses.replace(msg, content=kept)
    out = [m for i, m in enumerate(out) if i not in drop]
    tail = " ".join(_WORDS.findall(unfinished_text)[:remaining])
    if tail:
        out.append(Message("assistant", tail))
    return out
