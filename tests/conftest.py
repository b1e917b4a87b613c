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
