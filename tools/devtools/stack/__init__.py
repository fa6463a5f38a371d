"""The embedded local stack: Kafka (KRaft), Redis and Triton on loopback, without Docker."""
