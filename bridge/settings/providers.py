"""[stt], [llm] and [tts] provider settings. Keys come from the environment only."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from bridge.settings.base import Section


class SttSettings(Section):
    # Tried in order: on failure the engine moves to the next.
    providers: list[Literal["deepgram", "deepgram-flux", "pocketsphinx"]] = Field(
        ["pocketsphinx"], min_length=1
    )
    deepgram_url: str = ""  # empty: Deepgram's production endpoint
    deepgram_model: str = "nova-3"
    language: str = "en-US"
    connect_timeout_s: float = Field(3.0, gt=0)
    # deepgram: "mulaw" sends the caller's G.711 as is (telephony-native); "linear16" sends PCM
    deepgram_encoding: Literal["mulaw", "linear16"] = "mulaw"
    deepgram_endpointing_ms: int = Field(300, ge=10, le=5000)
    deepgram_utterance_end_ms: int = Field(1000, ge=1000, le=5000)  # Deepgram's minimum is 1000
    # KeepAlive after this much time without audio (Deepgram closes idle sockets after 10 s)
    deepgram_keepalive_s: float = Field(4.0, gt=0, lt=10)
    # audio sent but no message back for this long: the socket is dead, reconnect and replay
    stall_timeout_s: float = Field(6.0, gt=0)
    # deepgram-flux (listen v2): turn detection by the STT; EndOfTurn ends the caller's turn
    flux_model: Literal["flux-general-en", "flux-general-multi"] = "flux-general-en"
    # end-of-turn confidence needed for EndOfTurn (Deepgram's default when unset)
    flux_eot_threshold: float | None = Field(None, ge=0.5, le=0.9)
    # set to turn on EagerEndOfTurn / TurnResumed (a reply prepared before the turn surely ended)
    flux_eager_eot_threshold: float | None = Field(None, ge=0.3, le=0.9)
    # silence after speech that ends a turn even without a confident end
    flux_eot_timeout_ms: int = Field(5000, ge=500, le=10000)
    # caller audio goes to a cloud STT in chunks this long (one WebSocket message each), not a
    # message per 20 ms frame, while the caller speaks; silence goes frame by frame, and held audio
    # goes at once when speech ends, before a Finalize /
    # ForceEndTurn and on a cut-in. 20: every frame (Flux recommends 80 ms chunks)
    send_chunk_ms: int = Field(80, ge=20, le=250)
    # reconnects per stream (unfinalized audio is replayed) before the engine is told to fail over
    max_reconnects: int = Field(2, ge=0, le=10)
    # pocketsphinx: optional JSGF grammar or keyphrase list for closed questions
    pocketsphinx_grammar: str = ""
    # warm decoder processes kept for the next calls (each ~100 MiB; loading one takes ~0.4 s
    # of CPU); with 2 or more, back-to-back calls reuse decoders instead of loading one each
    pocketsphinx_idle_decoders: int = Field(2, ge=0, le=64)
    # an utterance never finalized (e.g. endless noise) is cut as a final after this long
    pocketsphinx_max_utterance_s: float = Field(30.0, gt=0, le=600)
    # pocketsphinx: build the language model from these sentences instead of the general one:
    # a text file (a sentence a line) or the scripted agent's TOML (its intents' phrases,
    # examples and keywords). Far better on in-domain speech; anything else is heard as the
    # nearest in-domain words. Not together with pocketsphinx_grammar.
    pocketsphinx_corpus: str = ""


class LlmSettings(Section):
    providers: list[Literal["openai", "scripted"]] = Field(["scripted"], min_length=1
    )
    model: str = "gpt-4o"
    base_url: str = ""  # any OpenAI-compatible server (vLLM, Ollama, Groq)
    temperature: float = Field(0.6, ge=0, le=2)
    max_tokens: int = Field(300, ge=1)
    first_token_timeout_s: float = Field(2.5, gt=0)
    # reasoning models think before the first content token (o-series silently, others
    # streaming reasoning_content): a model named here gets this first-token timeout instead
    first_token_timeout_by_model: dict[str, float] = Field(default_factory=dict)
    stall_timeout_s: float = Field(3.0, gt=0)
    max_retries: int = Field(0, ge=0)
    connect_timeout_s: float = Field(2.0, gt=0)
    # Open (or refresh) the first LLM's connection when a call is offered (GET {base_url}/models
    # with the same key), so the first turn skips TCP + TLS set-up; the offline engine has none
    warmup_on_call: bool = True
    # Again when the caller starts speaking, if the pool sat idle >= 2 s since (it drops a
    # connection idle 5 s): a first question asked late still finds its connection open
    warmup_on_speech: bool = True
    script_file: str = "config/agent-script.toml"


    @model_validator(mode="before")
    @classmethod
    def _model_first_token_timeout(cls, data: Any) -> Any:
        """Resolve the per-model first-token timeout once, so the engine's timer and the
        client's deadline (both read first_token_timeout_s) agree."""
        if isinstance(data, dict):
            by_model = data.get("first_token_timeout_by_model") or {}
            model = data.get("model", "gpt-4o")
            if isinstance(by_model, dict) and model in by_model:
                data = {**data, "first_token_timeout_s": by_model[model]}
        return data


class TtsSettings(Section):
    providers: list[Literal["elevenlabs", "elevenlabs-ws", "elevenlabs-multi", "espeak"]] = Field(
        ["espeak"], min_length=1
    )
    elevenlabs_url: str = ""
    voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    model_id: str = "eleven_flash_v2_5"
    output_format: str = "ulaw_8000"
    espeak_voice: str = "en-us+klatt"
    espeak_rate_wpm: int = Field(165, ge=80, le=450)
    first_byte_timeout_s: float = Field(2.0, gt=0)
    stall_timeout_s: float = Field(2.0, gt=0)  # gap between audio chunks once audio flows
    connect_timeout_s: float = Field(2.0, gt=0)
    # elevenlabs: 0-4, higher trades quality for first-byte latency
    elevenlabs_streaming_latency: int = Field(3, ge=0, le=4)
    # elevenlabs-ws: keep one spare stream-input socket open so a turn skips the handshake;
    # elevenlabs-multi: open a shared socket before the free context slots run out
    elevenlabs_keep_warm: bool = True
    # Open (or refresh) the first TTS's connection when a call is offered (before it is
    # answered), so the greeting or first reply after the connection went stale skips the
    # set-up (bench/tts_warmup.py: 60-80 ms at 40 ms RTT once the answer takes ~2 RTTs)
    warmup_on_call: bool = True
