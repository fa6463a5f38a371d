"""Where training reads and writes: the labelled data, the model cache, the Triton model repository."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# the checkout this distribution is installed from (tools/ is always used from a checkout)
REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "listing_classifier"
SERVING_DIR = REPO / "triton_models" / MODEL_NAME  # config.pbtxt and the model's serving code, in git


class TrainingSettings(BaseSettings):
    # numbers are finite, as in the runtime's settings (an `inf` timeout waited for ever)
    model_config = SettingsConfigDict(env_prefix="LISTINGS_", frozen=True, extra="ignore", allow_inf_nan=False)

    data_dir: Path = Field(REPO.parent / "shared" / "data", description="the default labelled product data")
    cache_dir: Path = Field(Path.home() / ".cache" / "listing-classifier", description="trained-model cache")
    model_repository: Path = Field(REPO / "triton_models", description="the Triton model repository")
