"""Generated gRPC stubs for switchyard.v1 (do not edit; regenerate)."""
