"""Generated gRPC stubs for the Open Inference Protocol (Triton's inference.GRPCInferenceService)."""
