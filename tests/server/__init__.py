"""The server tier: see conftest.py."""
