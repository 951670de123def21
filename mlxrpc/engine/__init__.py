"""The MLX engine: plain Python types in, events out; no gRPC, no HTTP."""
