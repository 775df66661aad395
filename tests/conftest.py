"""Shared fixtures live in tests/fixtures/ (one module per real part we run locally)."""

pytest_plugins = [
    "tests.fixtures.sandbox",
    "tests.fixtures.azurite",
    "tests.fixtures.sqlserver",
]
