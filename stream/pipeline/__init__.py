"""The pipeline shared by the live worker and the backfill: validate -> classify -> sinks."""
