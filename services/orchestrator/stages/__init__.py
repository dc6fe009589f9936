"""The stages of a conversation, one module each, in the order audio flows:
``intake`` (the client's messages) → ``listen`` (microphone → STT → turns) → ``answer`` (one
turn at a time: ``think``, LLM → text, joined to ``speak``, text → TTS → audio) → the client.
Each takes its neighbours as arguments (stubs, channels, the outbox), so it can be tested
alone with fakes."""
