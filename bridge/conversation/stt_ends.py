"""Ends of utterance the STT still owes to something that is gone (sans-I/O, engine helper).

Every STT client promises exactly one end of utterance per ``finalize()``, in the order of the
audio (base.SttStream; the Deepgram clients keep it across reconnects). So when the engine no
longer waits for an answer, the STT's next end is still that answer, whatever turn is open
when it comes, and everything the STT says before it is about the audio before it:

- a backchannel's finalize (a cough while the agent talks): its words are dropped;
- a turn that gave up waiting (``stt_final_timeout_s``: a reconnect and its replay can take
  longer): the turn was answered on what was heard, so its late words are the OLD turn's, not
  the caller's next turn's. They must not end (or join) that next turn; they are not put into
  the LLM's history either (the reply to that turn is already out, and the history is what the
  caller and the agent said in order); they are recorded (``stt_late_final``: the words, what
  the turn was answered with, how late), logged and counted (a metric, by the driver).

A late end that never comes (an STT breaking its promise) is waited for at most
LATE_FINAL_MAX_S after the turn gave up: past that, the caller's words are theirs again.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from bridge.providers.base import Transcript

log = logging.getLogger(__name__)

# Longer than a dead socket's detection + reconnect + replay (Flux: the ping's bound, 3 s
# connects, the replay and its 1 s wait), short enough that a broken promise costs a turn or
# two, not the call
LATE_FINAL_MAX_S = 30.0
LATE_RECORD = "stt_late_final"


@dataclass(slots=True)
class _Owed:
    kind: Literal["discard", "late"]
    since: float = 0.0  # when the turn stopped waiting (late)
    answered_with: str = ""  # what the turn was answered on (late)
    words: list[str] = field(default_factory=list)  # finals gathered for it so far


class OwedEnds:
    """The STT's owed ends, oldest first (the order they will come in)."""

    def __init__(self) -> None:
        self._owed: deque[_Owed] = deque()

    def __bool__(self) -> bool:
        return bool(self._owed)

    def discard(self) -> None:
        self._owed.append(_Owed("discard"))

    def late(self, now: float, count: int, answered_with: str) -> None:
        for _ in range(count):
            self._owed.append(_Owed("late", now, answered_with))

    def clear(self) -> None:
        self._owed.clear()

    def claim(self, now: float, tr: Transcript, turn_open: bool) -> tuple[bool, dict[str, object] | None]:
        """Is ``tr`` owed to something gone? (claimed, the late record to write if it ends one)"""
        owed = self._owed
        while owed and owed[0].kind == "late" and now - owed[0].since > LATE_FINAL_MAX_S:
            gone = owed.popleft()
            log.warning("STT end owed to a turn %.0f s ago never came: no longer waited for",
                        now - gone.since)
        if not owed:
            return False, None
        first = owed[0]
        if first.kind == "discard":
            # the backchannel's: its final (and the end); an interim may be the next speech's
            if not (tr.is_final and (tr.end_of_utterance or not turn_open)):
                return False, None
            if tr.end_of_utterance:
                owed.popleft()
            return True, None
        # the late turn's: everything up to its end is about that turn's audio
        if tr.is_final and tr.text.strip():
            first.words.append(tr.text.strip())
        if not tr.end_of_utterance:
            return True, None
        owed.popleft()
        words = " ".join(first.words)
        late_s = now - first.since
        log.warning("STT end came %.1f s after its turn stopped waiting (%d chars): recorded, "
                    "not taken into the next turn", late_s, len(words))
        return True, {"text": words, "answered_with": first.answered_with, "late_s": round(late_s, 3)}
