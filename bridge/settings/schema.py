"""The whole settings schema: one section per area, each in its own module."""

from __future__ import annotations

from pydantic import Field, model_validator

from bridge.settings.agents import BUILTIN_AGENTS, NAME, AgentProfile
from bridge.settings.base import Section
from bridge.settings.conversation import ConversationSettings
from bridge.settings.daemon import DaemonSettings, HttpSettings, LoggingSettings
from bridge.settings.media import MediaSettings
from bridge.settings.outbound import ComplianceSettings, OutboundSettings, PrivacySettings
from bridge.settings.plivo import PlivoSettings
from bridge.settings.providers import LlmSettings, SttSettings, TtsSettings
from bridge.settings.sip import SipSettings


class Settings(Section):
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)  # type: ignore[arg-type]
    http: HttpSettings = Field(default_factory=HttpSettings)  # type: ignore[arg-type]
    logging: LoggingSettings = Field(default_factory=LoggingSettings)  # type: ignore[arg-type]
    sip: SipSettings = Field(default_factory=SipSettings)  # type: ignore[arg-type]
    media: MediaSettings = Field(default_factory=MediaSettings)  # type: ignore[arg-type]
    conversation: ConversationSettings = Field(default_factory=ConversationSettings)  # type: ignore[arg-type]
    stt: SttSettings = Field(default_factory=SttSettings)  # type: ignore[arg-type]
    llm: LlmSettings = Field(default_factory=LlmSettings)  # type: ignore[arg-type]
    tts: TtsSettings = Field(default_factory=TtsSettings)  # type: ignore[arg-type]
    plivo: PlivoSettings = Field(default_factory=PlivoSettings)  # type: ignore[arg-type]
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)  # type: ignore[arg-type]
    compliance: ComplianceSettings = Field(default_factory=ComplianceSettings)  # type: ignore[arg-type]
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)  # type: ignore[arg-type]
    # Named agent profiles ([agents.NAME]), chosen per call by plivo.routes[].agent.
    agents: dict[str, AgentProfile] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _profiles(self) -> Settings:
        tools = {t.name for t in self.conversation.http_tools}
        for name, profile in self.agents.items():
            if name in BUILTIN_AGENTS:
                raise ValueError(f"agents.{name}: {name!r} is a built-in agent; pick another name")
            if not NAME.fullmatch(name):
                raise ValueError(f"agents.{name}: a name is letters, digits, '_' and '-' (up to 64)")
            unknown = sorted(set(profile.tools or ()) - tools)
            if unknown:
                raise ValueError(f"agents.{name}.tools: {', '.join(unknown)} not in conversation.http_tools")
        return self
