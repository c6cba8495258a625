"""The scalability benchmark (`python -m tools.bench`): see `tools/bench/__main__.py`."""
