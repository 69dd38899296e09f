"""Shared test setup: make the checkout's src/ importable and configure Hypothesis."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from hypothesis import settings

# The package is normally installed editable (pip install -e .); fall back to src/ otherwise.
if importlib.util.find_spec("cvmc") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# No per-example deadline: shared CI machines have noisy timings. HYPOTHESIS_PROFILE=thorough
# runs more examples.
settings.register_profile("default", deadline=None)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
