"""From a checkout, load the bnsuite pytest plugin (an installed bnsuite registers it through its entry point)."""

pytest_plugins = ["bnsuite.plugin"]
