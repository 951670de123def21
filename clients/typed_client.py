"""The typed client: text, chat and token-id prompts, streaming, errors.

    python clients/typed_client.py [--target localhost:50051] [--api-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio

from mlxrpc.client import AsyncClient, Client, MlxrpcError


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="localhost:50051")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    with Client(args.target, api_key=args.api_key, timeout=60) as client:
        print([m.id for m in client.models()])
        done = client.generate("The capital of France is", max_tokens=12, temperature=0.0)
        print(repr(done.text), done.finish_reason, done.usage)
        for delta in client.stream([{"role": "user", "content": "Tell me a story"}], max_tokens=30, seed=7):
            print(delta.text, end="", flush=True)
        print()
        try:
            client.generate("x", temperature=-1.0)
        except MlxrpcError as error:
            print(f"error: {error.code.name} on {error.field}: {error.message}")

    async def run_async() -> None:
        async with AsyncClient(args.target, api_key=args.api_key) as client:
            done = await client.generate("Hello", max_tokens=8)
            print("async:", repr(done.text))

    asyncio.run(run_async())


if __name__ == "__main__":
    main()
