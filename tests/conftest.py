import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "serial: a fast test that measures time closely enough that it runs alone, not beside "
        "another pytest-xdist worker (scripts/test.sh runs these with the slow tests)")
    config.addinivalue_line(
        "markers", "parallel_safe: a slow test that starts no engine and mostly waits (on a real Prometheus), "
        "safe beside another worker (scripts/test.sh runs it with the fast tests)")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="Rewrite golden files from the current output instead of comparing.")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")
