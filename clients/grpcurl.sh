#!/usr/bin/env bash
# The gRPC service with grpcurl, through server reflection (no .proto needed).
# Usage: clients/grpcurl.sh [localhost:50051]
set -euo pipefail
TARGET=${1:-localhost:50051}

grpcurl -plaintext "$TARGET" list
grpcurl -plaintext "$TARGET" describe mlxrpc.v1.GenerateRequest
grpcurl -plaintext "$TARGET" mlxrpc.v1.Inference/ListModels
grpcurl -plaintext -d '{"model": "default", "text": "Hello", "stopping": {"max_tokens": 20}}' \
  "$TARGET" mlxrpc.v1.Inference/StreamGenerate
grpcurl -plaintext -d '{"service": "mlxrpc.v1.Inference"}' "$TARGET" grpc.health.v1.Health/Check
