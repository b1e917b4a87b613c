import os

from hypothesis import HealthCheck, settings

# CI is deterministic (derandomize): the same examples on every run, so a red
# CI is a regression, not a new draw. The "dev" profile explores at random.
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_include_path(monkeypatch):
    """Every test starts with an empty include search path (fuzzylogic_seg adds its
    shipped rule folder when it resolves a rule file): no test sees another's."""
    from fuzzylogic import parser

    monkeypatch.setattr(parser, "_INCLUDE_DIRS", [])
    monkeypatch.delenv(parser.INCLUDE_ENV, raising=False)
