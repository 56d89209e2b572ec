"""The pocketsphinx decoder process: ``python -m bridge.providers.stt.pocketsphinx_worker``.

Why a process and not a thread: pocketsphinx's ``process_raw`` holds the GIL while it
decodes (measured: a decoding thread stalls the event loop 20-60 ms at a time), so in the
daemon's process it would delay every call's 20 ms packets. In its own process it runs on
the other core and the loop only writes to a pipe.

Reads protocol messages on stdin, writes them on the original stdout; anything the C
library prints goes to stderr instead, so it cannot corrupt the protocol. Exits at EOF.
"""

from __future__ import annotations

import argparse
import os
import sys

from bridge.providers.stt import pocketsphinx_protocol as proto
from bridge.providers.stt.pocketsphinx_session import (
    DecoderSession,
    build_decoder,
    corpus_sentences,
    parse_grammar,
)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _append_interim(out: list[bytes], session: DecoderSession) -> None:
    text = session.interim()
    if text is not None:
        out.append(proto.encode(proto.INTERIM, text.encode()))


def serve(in_fd: int, out_fd: int, grammar: str, max_utterance_s: float, corpus: str = "") -> int:
    try:
        sentences = corpus_sentences(corpus) if corpus else None
        session = DecoderSession(build_decoder(parse_grammar(grammar), sentences), max_utterance_s)
    except Exception as exc:  # reported to the parent, which raises a ProviderError
        _write_all(out_fd, proto.encode(proto.ERROR, f"decoder failed to start: {exc}".encode()))
        return 1
    _write_all(out_fd, proto.encode(proto.READY))
    parser = proto.MessageParser()
    while True:
        data = os.read(in_fd, 1 << 16)
        if not data:
            return 0
        out: list[bytes] = []
        try:
            messages = parser.feed(data)
        except proto.ProtocolError as exc:
            _write_all(out_fd, proto.encode(proto.ERROR, str(exc).encode()))
            return 1
        for msg in messages:
            if msg.kind == proto.AUDIO:
                cut = session.feed(msg.payload)
                if cut is not None:
                    out.append(proto.encode_final(cut, end_of_utterance=False))
                elif session.interim_due:  # working through a backlog: still report progress
                    _append_interim(out, session)
            elif msg.kind == proto.FINALIZE:
                out.append(proto.encode_final(session.finalize(), end_of_utterance=True))
            elif msg.kind == proto.RESET:
                session.reset()
                out.append(proto.encode(proto.READY))
        # A hypothesis after each read (one 20 ms frame when keeping up), and every 100 ms of
        # audio within a backlog; each costs ~25 us.
        _append_interim(out, session)
        if out:
            _write_all(out_fd, b"".join(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grammar", default="")
    parser.add_argument("--max-utterance-s", type=float, default=30.0)
    parser.add_argument("--corpus", default="")
    args = parser.parse_args(argv)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints from C or Python now land on stderr
    sys.stdout = sys.stderr
    return serve(0, out_fd, args.grammar, args.max_utterance_s, args.corpus)


if __name__ == "__main__":
    sys.exit(main())
