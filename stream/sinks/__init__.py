"""Sinks: Redis (current state, indexes, update stream) and the downstream Kafka topics."""
