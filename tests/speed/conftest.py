"""The evidence tests' fixtures (a real plan, store and keys), for the clock's record test."""

from tests.evidence.conftest import keys, plan, store  # noqa: F401 (pytest fixtures)
