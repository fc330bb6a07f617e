"""detection heads."""
