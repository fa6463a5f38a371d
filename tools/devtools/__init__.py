"""Developer tooling: the embedded local stack (Kafka, Redis, Triton without Docker), the demo, the benchmark."""
