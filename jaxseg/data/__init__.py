"""Data sets (PLACEHOLDER: owned by the data work)."""
