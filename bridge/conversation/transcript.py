"""A JSON-lines transcript per call: turns, interruptions, tool calls, latency marks.

The first line (event "call") carries ``subject``, the keyed pseudonymous id of the person on
the other end (bridge.pseudonym): `forget` finds the file by it. Phone numbers are masked
(unless logging.log_phone_numbers is set) and, with
privacy.redact_transcripts, what was said is redacted (emails, Aadhaar, PAN, numbers). A
transcript that cannot be written is logged once and dropped: it never fails the call.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import IO, Any

from bridge.callfacts import CALL_UUID
from bridge.callmodel import CallInfo
from bridge.endreason import end_reason
from bridge.privacy import mask_phone_numbers, redact
from bridge.pseudonym import call_subject
from bridge.settings import Settings

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TEXT_KEYS = {"text", "full_text", "result"}
_ID_KEYS = {"call_id", "call_uuid"}


class TranscriptWriter:
    def __init__(self, path: Path | None, *, mask_numbers: bool = True, redact_text: bool = True) -> None:
        self.path = path
        self._mask = mask_numbers
        self._redact = redact_text
        self._file: IO[str] | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = path.open("a", encoding="utf-8", buffering=1)
            except OSError as exc:
                log.error("transcript %s cannot be written: %s", path, exc)
                self.path = None

    @classmethod
    def for_call(cls, settings: Settings, info: CallInfo) -> TranscriptWriter:
        """A writer under conversation.transcripts_dir (empty: no transcript is written)."""
        folder = settings.conversation.transcripts_dir
        mask = not settings.logging.log_phone_numbers
        redact_text = settings.privacy.redact_transcripts
        if not folder:
            return cls(None, mask_numbers=mask, redact_text=redact_text)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name = f"{stamp}-{_UNSAFE.sub('_', info.call_id)[:80] or 'call'}.jsonl"
        writer = cls(Path(folder) / name, mask_numbers=mask, redact_text=redact_text)
        try:  # the person's pseudonymous id: how `forget` finds this file
            subject = call_subject(settings.daemon.data_dir, settings.compliance.default_region,
                                   info.direction, info.from_uri, info.to_uri, info.plivo_headers)
        except OSError as exc:
            log.error("transcript subject id unavailable (key file): %s", exc)
            subject = ""
        writer.write(
            "call",
            call_id=info.call_id,
            call_uuid=info.plivo_headers.get(CALL_UUID, ""),  # Plivo's id: joins the XML server's lines
            subject=subject,
            direction=info.direction,
            from_uri=writer._number(info.from_uri),
            to_uri=writer._number(info.to_uri),
        )
        return writer

    def _number(self, text: str) -> str:
        return mask_phone_numbers(text) if self._mask else text

    def _clean(self, key: str, value: Any) -> Any:
        if key in _ID_KEYS:
            return value  # ids, not numbers: a UUID's digit run must not be masked
        if isinstance(value, str):
            if key in _TEXT_KEYS and self._redact:
                return redact(value)
            return self._number(value)
        if isinstance(value, dict):
            return {k: self._clean(k, v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._clean(key, v) for v in value]
        return value

    def write(self, event: str, **data: Any) -> None:
        if self._file is None:
            return
        if event == "call_end" and "reason" in data:
            # The shared vocabulary (bridge.endreason), as in the calls metric; the words of
            # the transport or engine, when different, stay as the detail.
            reason = end_reason(str(data["reason"])).value
            if reason != data["reason"]:
                data["detail"] = data["reason"]
            data["reason"] = reason
        line = {"ts": round(time.time(), 3), "event": event}
        line.update({k: self._clean(k, v) for k, v in data.items()})
        try:
            self._file.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
        except OSError as exc:
            log.error("transcript %s: write failed, no more lines: %s", self.path, exc)
            self._close_quietly()

    def _close_quietly(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass

    def close(self) -> None:
        self._close_quietly()
