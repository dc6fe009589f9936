"""Runtime shared by every Parole service: config, server, health, metrics, errors, audio."""
