"""Unit tests: no services, no processes, seconds in all (`pytest tests/unit`)."""
