"""Generated protobuf and gRPC stubs of the mlxrpc.v1 contract (see mlxrpc.protogen)."""
