"""listing-classifier: a streaming worker that classifies new e-commerce listings."""

__version__ = "0.1.0"
