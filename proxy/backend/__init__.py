"""Backend clients (Triton)."""
