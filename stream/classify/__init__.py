"""Classify: micro-batches of listings sent to the Triton-hosted classifier."""
