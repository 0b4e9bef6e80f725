"""Test-only helpers that production code never imports."""
