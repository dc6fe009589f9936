"""The orchestrator: holds spoken conversations by chaining STT, LLM and TTS with the stages overlapping."""
