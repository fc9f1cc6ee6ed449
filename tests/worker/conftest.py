"""The worker's unit tests: the embedded domain's fixtures (tests/embedded.py)."""

from tests.embedded import alice, app, session, settings  # noqa: F401 (fixtures)
