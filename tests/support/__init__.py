"""Helpers that several test packages share (never in a conftest, which tests must not import)."""
