"""Necks: FPN, ASPP."""
