"""A local Plivo simulator: signs and POSTs webhooks like Plivo, follows the XML it gets back
(<Stream> -> a WebSocket client speaking Plivo's stream protocol, <Dial><User> -> a SIP call),
plays a caller recording and records what the caller hears. For tests, the demo and users
without a Plivo account."""
