"""The end-to-end tier: see README.md."""
