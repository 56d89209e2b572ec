"""The scripted agent's rules: schema and loading of the TOML file (settings.llm.script_file).

```toml
[script]
initial_state = "main"
fallback = "Sorry, I didn't catch that."   # when nothing matches
greeting = ""              # said if asked to speak before the caller said anything
match_threshold = 0.8      # 0-1: how close a heard word must be to a keyword
min_score = 1.0            # keyword weight an intent needs to be chosen

[states.booking]           # optional: a state's own fallback
fallback = "Morning or afternoon?"

[[intents]]
name = "hours"
keywords = ["open", "hours"]          # or weighted: { open = 2, when = 0.5 }
phrases = ["what time do you open"]   # whole phrases, fuzzy, weight phrase_weight
examples = ["are you open on saturday"]  # more things callers say: only for the STT's language
                                      # model (stt.pocketsphinx_corpus = this file), not matched
dtmf = ["1"]                          # keys that choose this intent outright
states = []                           # where it applies; empty = every state
reply = "We are open nine to five."
tool = ""                             # end_call | transfer_call | send_dtmf | any offered tool
tool_args = {}
next_state = ""                       # empty = stay
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.settings.paths import resolve_path

_DTMF_KEYS = set("0123456789*#ABCD")


class ScriptError(ValueError):
    """The script file is missing or invalid; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Intent(_Strict):
    name: str = Field(min_length=1)
    keywords: dict[str, float] = Field(default_factory=dict)
    phrases: list[str] = Field(default_factory=list)
    phrase_weight: float = Field(2.0, gt=0)
    examples: list[str] = Field(default_factory=list)  # for stt.pocketsphinx_corpus only
    dtmf: list[str] = Field(default_factory=list)
    states: list[str] = Field(default_factory=list)
    reply: str = ""
    tool: str = ""
    tool_args: dict[str, Any] = Field(default_factory=dict)
    next_state: str = ""

    @field_validator("keywords", mode="before")
    @classmethod
    def _keyword_list(cls, value: Any) -> Any:
        if isinstance(value, list):  # a plain list means weight 1 each
            return {str(k): 1.0 for k in value}
        return value

    @field_validator("keywords")
    @classmethod
    def _normalise_keywords(cls, value: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for word, weight in value.items():
            key = word.strip().lower()
            if not key or " " in key:
                raise ValueError(f"keyword {word!r} must be one word (use phrases for several)")
            if weight <= 0:
                raise ValueError(f"keyword {word!r} needs a positive weight")
            out[key] = weight
        return out

    @field_validator("dtmf", mode="before")
    @classmethod
    def _dtmf_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("dtmf")
    @classmethod
    def _check_dtmf(cls, value: list[str]) -> list[str]:
        for keys in value:
            if not keys or not set(keys.upper()) <= _DTMF_KEYS:
                raise ValueError(f"dtmf {keys!r}: only 0-9, *, #, A-D")
        return [k.upper() for k in value]

    @model_validator(mode="after")
    def _does_something(self) -> Intent:
        if not (self.reply.strip() or self.tool):
            raise ValueError(f"intent {self.name!r} has neither a reply nor a tool")
        if not (self.keywords or self.phrases or self.dtmf):
            raise ValueError(f"intent {self.name!r} has no keywords, phrases or dtmf to match")
        return self


class StateRules(_Strict):
    fallback: str = ""


class ScriptOptions(_Strict):
    initial_state: str = "main"
    fallback: str = "Sorry, I didn't catch that. Could you say it again?"
    greeting: str = ""
    match_threshold: float = Field(0.8, gt=0, le=1)
    min_score: float = Field(1.0, gt=0)


class Script(_Strict):
    script: ScriptOptions = Field(default_factory=ScriptOptions)  # type: ignore[arg-type]
    states: dict[str, StateRules] = Field(default_factory=dict)
    intents: list[Intent] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_states(self) -> Script:
        known = set(self.states) | {self.script.initial_state}
        for intent in self.intents:
            known.update(intent.states)
        for intent in self.intents:
            if intent.next_state and intent.next_state not in known:
                raise ValueError(
                    f"intent {intent.name!r}: next_state {intent.next_state!r} is no known state"
                )
        return self

    def fallback_for(self, state: str) -> str:
        rules = self.states.get(state)
        return rules.fallback if rules and rules.fallback else self.script.fallback


def parse_script(text: str, source: str = "<script>") -> Script:
    try:
        return Script.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ScriptError(f"{source}: not valid TOML ({exc})") from exc
    except ValidationError as exc:
        raise ScriptError(f"{source}: {exc}") from exc


def load_script(path: str | Path) -> Script:
    resolved = resolve_path(path)
    try:
        text = resolved.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(f"{path}: cannot read the agent script ({exc})") from exc
    return parse_script(text, str(resolved))
