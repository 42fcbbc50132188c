"""Shared pytest set-up. Fixtures live in tests/fixtures/, one module per real system."""

pytest_plugins = [
    "tests.fixtures.sandbox",
    "tests.fixtures.postgres",
    "tests.fixtures.sshd",
    "tests.fixtures.users",
]
