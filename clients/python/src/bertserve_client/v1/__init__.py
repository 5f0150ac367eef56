"""Generated gRPC stubs for bertserve.v1."""
