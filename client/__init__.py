"""Parole desktop client: talk to the orchestrator from a microphone, WAV files or the keyboard."""
