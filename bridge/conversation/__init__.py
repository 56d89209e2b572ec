"""The conversation engine: turn-taking, barge-in, tools and latency marks (DESIGN.md, Turn contract).

``engine.Engine`` is the sans-I/O state machine; ``driver.run_conversation`` runs it on an
AudioLeg with the configured providers; ``memory_leg.MemoryLeg`` is an AudioLeg for tests
and simulations.
"""

from bridge.conversation.driver import run_conversation

__all__ = ["run_conversation"]
