"""The gRPC surface: proto ⇄ engine translation, status codes, the grpc.aio server."""
