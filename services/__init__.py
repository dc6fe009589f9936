"""Parole: a real-time voice assistant as a fleet of gRPC services."""
