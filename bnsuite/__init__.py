"""bnsuite: a cross-framework BatchNorm conformance suite.

Subpackages: ``adapters`` (one adapter per framework, the float64 oracle), ``suites`` (the pytest suites),
``reports`` (results files and the HTML report), ``probe`` (find the layer that makes a model batch-dependent);
``plugin`` is the pytest plugin and ``runner`` the command line (``python3 -m bnsuite``). Standard library only at
import time, so the runner starts on a bare Python.
"""

__version__ = "0.3.0"  # the one version: pyproject.toml reads it; CHANGELOG.md says what changed
