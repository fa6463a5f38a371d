"""A servable model version: the highest one in the repository, or one trained (or taken from the model
cache) and exported when the repository has none yet."""

from __future__ import annotations

from pathlib import Path

from training import export, train
from training.config import TrainingSettings


def ensure_model(settings: TrainingSettings, quick: bool = False, repo: Path | None = None) -> int:
    repo = repo or settings.model_repository
    existing = export.versions(repo)
    if existing:
        return existing[-1]
    artifact = train.train_or_reuse(settings, train.options(train.default_data(settings.data_dir), quick))
    return export.export(artifact, repo)
