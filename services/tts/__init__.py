"""Text-to-speech service: Piper voices, espeak-ng fallback, streaming synthesis, phrase cache."""
