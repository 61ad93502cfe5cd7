"""Shared pytest configuration."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: timing or long-running test; deselect with -m 'not slow'")
