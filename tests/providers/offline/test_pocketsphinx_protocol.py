"""The decoder-process wire format and grammar settings (no decoder needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.providers.stt import pocketsphinx_protocol as proto
from bridge.providers.stt.pocketsphinx_session import GrammarError, parse_grammar


def test_messages_survive_any_split() -> None:
    stream = (
        proto.encode(proto.AUDIO, b"\x01\x02" * 100)
        + proto.encode(proto.FINALIZE)
        + proto.encode_final("where are you located", end_of_utterance=True)
        + proto.encode(proto.INTERIM, "héllo".encode())
    )
    for step in (1, 3, 7, len(stream)):
        parser = proto.MessageParser()
        got: list[proto.Message] = []
        for i in range(0, len(stream), step):
            got.extend(parser.feed(stream[i : i + step]))
        assert [m.kind for m in got] == [proto.AUDIO, proto.FINALIZE, proto.FINAL, proto.INTERIM]
        assert got[0].payload == b"\x01\x02" * 100
        assert got[1].payload == b""
        assert proto.decode_final(got[2].payload) == ("where are you located", True)
        assert got[3].payload.decode() == "héllo"


def test_final_flag_round_trips() -> None:
    msg = proto.MessageParser().feed(proto.encode_final("", end_of_utterance=False))[0]
    assert proto.decode_final(msg.payload) == ("", False)
    with pytest.raises(proto.ProtocolError):
        proto.decode_final(b"")


def test_corrupt_length_is_refused_not_buffered() -> None:
    parser = proto.MessageParser()
    with pytest.raises(proto.ProtocolError, match="exceeds"):
        parser.feed(b"A\xff\xff\xff\xff")
    with pytest.raises(proto.ProtocolError):
        proto.encode(proto.AUDIO, bytes(proto.MAX_PAYLOAD + 1))


def test_grammar_setting_forms(tmp_path: Path) -> None:
    assert parse_grammar("") is None
    assert parse_grammar("   ") is None
    inline = parse_grammar("#JSGF V1.0; grammar g; public <s> = yes | no;")
    assert inline is not None and inline.kind == "jsgf-inline"
    gram = tmp_path / "menu.gram"
    gram.write_text("#JSGF V1.0;\ngrammar menu;\npublic <s> = yes | no;\n")
    spec = parse_grammar(str(gram))
    assert spec is not None and spec.kind == "jsgf-file"
    kws = tmp_path / "keys.txt"
    kws.write_text("operator /1e-20/\nopening hours /1e-30/\n")
    spec = parse_grammar(str(kws))
    assert spec is not None and spec.kind == "keyphrases"


def test_bad_grammar_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(GrammarError, match="no such file"):
        parse_grammar(str(tmp_path / "missing.gram"))
    bad = tmp_path / "bad.gram"
    bad.write_text("this is not JSGF at all {{{")
    with pytest.raises(GrammarError, match="not valid JSGF"):
        parse_grammar(str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(GrammarError, match="empty"):
        parse_grammar(str(empty))
