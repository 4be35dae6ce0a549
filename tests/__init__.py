"""nst-fast test suite (a package so tests can share helpers in conftest)."""
