"""Built-in generators (placeholder module filled in by the sampling layer)."""
