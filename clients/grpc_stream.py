"""Streams a chat completion over gRPC, then shows how errors arrive.

    python clients/grpc_stream.py [--target localhost:50051] [--model default]
"""

from __future__ import annotations

import argparse

import grpc

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="localhost:50051")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    with grpc.insecure_channel(args.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        request = pb.GenerateRequest(model=args.model)
        request.chat.messages.add(role="user").content.add(text="Tell me a story")
        request.stopping.max_tokens = 40
        request.sampling.temperature = 0.7
        request.sampling.seed = 42
        for message in stub.StreamGenerate(request, timeout=60):
            print(message.text, end="", flush=True)
            if message.HasField("finish"):
                f = message.finish
                print(f"\n[{pb.StopReason.Name(f.reason)}] {f.usage.completion_tokens} tokens, "
                      f"TTFT {f.timings.time_to_first_token_seconds * 1e3:.0f} ms, "
                      f"{f.timings.decode_tokens_per_second:.1f} tokens/s")
        try:
            stub.Generate(pb.GenerateRequest(model="no-such-model", text="hi"))
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}")


if __name__ == "__main__":
    main()
