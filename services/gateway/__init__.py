"""The gateway: the OpenAI-compatible HTTP and Realtime APIs and Wyoming (Home Assistant) in
front of the fleet's gRPC services. It holds no models."""
