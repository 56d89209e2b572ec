"""The Plivo audio-stream WebSocket leg: Plivo's JSON protocol over ``websockets``, exposed as
the same AudioLeg as the RTP leg so the conversation engine runs unchanged."""
