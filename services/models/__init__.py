"""The model-path manager: resolves model references to files, assembles and fetches models."""
