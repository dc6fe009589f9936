"""Speech-to-text service: streaming and unary recognition with faster-whisper."""
