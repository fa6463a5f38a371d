"""The listing classifier's training and export: data → taxonomy → fine-tuning → report → Triton version."""
