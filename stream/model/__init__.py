"""The listing classifier: data and taxonomy, training, the TF-IDF baseline, export to Triton."""
