"""Fixtures shared by the suite live in tests/lab/; each module there has a test showing it works."""
pytest_plugins = ["tests.lab.appliance", "tests.lab.browser", "tests.lab.firefox", "tests.lab.netns"]
