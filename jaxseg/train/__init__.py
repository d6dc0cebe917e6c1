"""Training (PLACEHOLDER: owned by the training work)."""
