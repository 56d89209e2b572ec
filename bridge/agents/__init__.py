"""Built-in agents that run on an AudioLeg without any provider: echo and prompt."""
