"""Shared pytest configuration.

Hypothesis profiles: "ci" (derandomized: the same examples on every run, no example database) is loaded
when the environment has CI set (as .ci/run does); "dev" (random, default) otherwise.  Select one
explicitly with HYPOTHESIS_PROFILE=ci|dev.  Per-test @settings(max_examples=...) keep their budgets.
"""

from __future__ import annotations

import os
import warnings

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# When a Hypothesis test fails, Hypothesis imports its patch writer, whose optional dependency libcst
# imports mypy_extensions.TypedDict, which emits a DeprecationWarning; under filterwarnings = error that
# turns a readable failure report into an INTERNALERROR.  Import it once here with that warning ignored.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except Exception:  # pragma: no cover - optional dependency absent
        pass
