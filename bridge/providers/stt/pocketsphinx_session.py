"""One pocketsphinx decoder driven as a stream: 8 kHz audio in, interim and final text out.

Runs inside the decoder process (pocketsphinx_worker). The settings that make it fast and
accurate enough come from DESIGN.md, Wire notes: Offline speech: the en-us model wants 16 kHz (fed
8 kHz it recognises nothing), so caller audio goes through a streaming 8k -> 16k resampler;
``fwdflat=False, bestpath=False`` keep the final result to a few milliseconds.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pocketsphinx import Config, Decoder, Jsgf
from pocketsphinx.lm import ArpaBoLM

from bridge.audio.resample import StreamResampler

DECODER_RATE = 16000
INPUT_RATE = 8000
INTERIM_EVERY_SAMPLES = DECODER_RATE // 10  # a hypothesis at least every 100 ms of audio
_SEARCH = "grammar"
# Initial cepstral mean for telephone audio. The model's default (40,3,-1,0...) is for wideband
# speech; 8 kHz audio upsampled to 16 kHz has nothing above 4 kHz, which moves the mean far
# away (c2..c4 ~ -35, 43, -35), and until live CMN catches up (several utterances) recognition
# collapses. Measured as the mean after 48 mu-law utterances from six espeak-ng voices;
# real phone speech shares the channel's band limit, and live CMN refines it per call.
TELEPHONE_CMN_INIT = "49.5,23,-35,43,-35,9.6,-4.2,-19,8,-15,6,-4.5,-1.6"


class GrammarError(ValueError):
    """settings.stt.pocketsphinx_grammar names no usable grammar or keyphrase list."""


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    kind: str  # "jsgf-file", "jsgf-inline" or "keyphrases"
    value: str  # a path, or the grammar text


def parse_grammar(spec: str) -> GrammarSpec | None:
    """Read ``pocketsphinx_grammar``: empty (the language model), inline JSGF (starts with
    ``#JSGF``), a ``.gram``/``.jsgf`` file, or any other file as a keyphrase list (one phrase a
    line, optionally ``/1e-20/`` thresholds). Raises GrammarError with the reason."""
    spec = spec.strip()
    if not spec:
        return None
    if spec.startswith("#JSGF"):
        return GrammarSpec("jsgf-inline", spec)
    path = Path(spec)
    if not path.is_file():
        raise GrammarError(f"pocketsphinx grammar {spec!r}: no such file")
    if path.suffix.lower() in (".gram", ".jsgf"):
        try:
            Jsgf(str(path))
        except (RuntimeError, ValueError) as exc:
            raise GrammarError(f"pocketsphinx grammar {spec!r}: not valid JSGF ({exc})") from exc
        return GrammarSpec("jsgf-file", str(path.resolve()))
    phrases = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not phrases:
        raise GrammarError(f"pocketsphinx keyphrase list {spec!r} is empty")
    return GrammarSpec("keyphrases", str(path.resolve()))


_WORD = re.compile(r"[a-z0-9']+")


def corpus_sentences(spec: str) -> list[str]:
    """Read ``pocketsphinx_corpus``: a text file (one sentence a line) or an agent script
    (``.toml``: its intents' ``phrases`` and ``examples``; not its keywords, which list
    mishearings too). Lowercased, no punctuation. Raises GrammarError with the reason."""
    path = Path(spec)
    if not path.is_file():
        raise GrammarError(f"pocketsphinx corpus {spec!r}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GrammarError(f"pocketsphinx corpus {spec!r}: cannot read it ({exc})") from exc
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise GrammarError(f"pocketsphinx corpus {spec!r}: not valid TOML ({exc})") from exc
        lines: list[str] = []
        for intent in data.get("intents", []):
            if isinstance(intent, dict):
                lines += [str(x) for x in intent.get("phrases", []) + intent.get("examples", [])]
    else:
        lines = text.splitlines()
    sentences = [" ".join(words) for line in lines if (words := _WORD.findall(line.lower()))]
    if not sentences:
        raise GrammarError(f"pocketsphinx corpus {spec!r} holds no sentences")
    return sentences


def _corpus_decoder(sentences: list[str], common: dict[str, object]) -> Decoder:
    # A trigram model of just these sentences (built in milliseconds): in-domain speech is
    # recognised far better (measured on espeak phone audio: 43% -> 63% of words on a call's
    # first turn, 48% -> 77% later), and anything else is heard as the nearest in-domain words.
    lm = ArpaBoLM(text="\n".join(sentences), add_start=True)
    lm.compute()
    # Only the corpus's words can be recognised, so the dictionary is cut down to them: with
    # the whole 130k-word one, the decoder takes 2.2 s to load instead of 10 ms.
    vocab = {word for sentence in sentences for word in sentence.split()}
    with open(str(Config()["dict"]), encoding="utf-8") as full:
        entries = [line for line in full if line.split(" ", 1)[0].split("(", 1)[0] in vocab]
    with tempfile.TemporaryDirectory(prefix="voice-bridge-") as tmp:
        lm_path, dict_path = os.path.join(tmp, "corpus.lm"), os.path.join(tmp, "corpus.dict")
        lm.write_file(lm_path)
        with open(dict_path, "w", encoding="utf-8") as small:
            small.writelines(entries)
        return Decoder(lm=lm_path, dict=dict_path, **common)  # loaded into memory: the files can go


def build_decoder(grammar: GrammarSpec | None, corpus: list[str] | None = None) -> Decoder:
    """A decoder with the fast settings; ~0.4 s and ~91 MiB (the language model is most of it).
    ``corpus``: sentences to build the language model from, instead of the general one."""
    common: dict[str, object] = {
        "samprate": DECODER_RATE,
        "fwdflat": False,
        "bestpath": False,
        "cmninit": TELEPHONE_CMN_INIT,
        "loglevel": "FATAL",
    }
    if grammar is None:
        return _corpus_decoder(corpus, common) if corpus else Decoder(**common)
    if grammar.kind == "jsgf-file":
        return Decoder(jsgf=grammar.value, **common)
    if grammar.kind == "keyphrases":
        return Decoder(kws=grammar.value, **common)
    decoder = Decoder(lm=None, **common)
    try:
        decoder.add_jsgf_string(_SEARCH, grammar.value)
    except (RuntimeError, ValueError) as exc:
        raise GrammarError(f"inline JSGF grammar is not valid ({exc})") from exc
    decoder.activate_search(_SEARCH)
    return decoder


class DecoderSession:
    """Utterances on one decoder: ``feed`` audio, ``interim`` when wanted, ``finalize`` at the
    end of a turn. An utterance starts with the first audio after a final result."""

    def __init__(self, decoder: Decoder, max_utterance_s: float) -> None:
        self._decoder = decoder
        self._max_samples = int(max_utterance_s * DECODER_RATE)
        self._resampler = StreamResampler(INPUT_RATE, DECODER_RATE)
        # Cepstral mean adapts to each caller's line; a pooled decoder starts the next call
        # from the model's initial value, so calls cannot influence one another.
        self._initial_cmn = decoder.get_cmn(False)
        self._in_utt = False
        self._samples = 0
        self._dirty = False
        self._since_interim = 0
        self._last_interim = ""

    @property
    def interim_due(self) -> bool:
        """Enough new audio since the last hypothesis that a backlog should still report one."""
        return self._since_interim >= INTERIM_EVERY_SAMPLES

    def feed(self, pcm8k: bytes) -> str | None:
        """Decode more audio. Returns the final text if the utterance hit its maximum length
        (the utterance is then cut and a new one starts with the next audio), else None."""
        pcm16k = self._resampler.push(pcm8k)
        if not pcm16k:
            return None
        if not self._in_utt:
            self._decoder.start_utt()
            self._in_utt = True
            self._samples = 0
        self._decoder.process_raw(pcm16k)
        self._samples += len(pcm16k) // 2
        self._since_interim += len(pcm16k) // 2
        self._dirty = True
        if self._samples >= self._max_samples:
            return self._end()
        return None

    def interim(self) -> str | None:
        """The current hypothesis if it changed since the last call (and is not empty)."""
        if not (self._in_utt and self._dirty):
            return None
        self._dirty = False
        self._since_interim = 0
        hyp = self._decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        if not text or text == self._last_interim:
            return None
        self._last_interim = text
        return text

    def finalize(self) -> str:
        """End the utterance: the final text of everything fed since the last final ("" if none)."""
        tail = self._resampler.flush()
        if tail and self._in_utt:
            self._decoder.process_raw(tail)
        return self._end() if self._in_utt else ""

    def _end(self) -> str:
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        self._in_utt = False
        self._dirty = False
        self._last_interim = ""
        return hyp.hypstr if hyp is not None else ""

    def reset(self) -> None:
        """Forget the stream (the call ended): ready for another caller."""
        if self._in_utt:
            self._decoder.end_utt()
            self._in_utt = False
        self._resampler.reset()
        self._decoder.set_cmn(self._initial_cmn)
        self._dirty = False
        self._last_interim = ""
