"""The model's serving code, loaded from where Triton serves it (`triton_models/listing_classifier/`).

`classifier.py` there scores listings exactly as Triton's `model.py` does (text, tokenizer, engines, linear part,
fusion, calibration, hierarchy, tag gating); `network.py` defines the torch network. Training builds, trains and
scores through them; export copies them into every version folder, so a version always runs the code it was
trained and measured with."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from training.config import SERVING_DIR


def load_module(path: Path, name: str) -> ModuleType:
    """A module from a file, once per name."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def network() -> ModuleType:
    return load_module(SERVING_DIR / "network.py", "listing_classifier_network")


def classifier() -> ModuleType:
    return load_module(SERVING_DIR / "classifier.py", "listing_classifier_serving")
