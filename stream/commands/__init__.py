"""Small one-shot commands of the `listings` CLI (the worker, backfill and produce keep theirs beside their code)."""
