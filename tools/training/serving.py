"""The model's serving code, loaded from where Triton serves it (`triton_models/listing_classifier/`).

`network.py` there is the one definition of the network and its batch predictor: training uses it to
build, train and score the model, Triton's `model.py` uses it to serve; export copies both into every
version folder, so a version always runs the code it was trained with."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from training.config import SERVING_DIR


def network() -> ModuleType:
    name = "listing_classifier_network"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SERVING_DIR / "network.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
