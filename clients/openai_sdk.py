"""The official openai SDK against the mlxrpc REST sidecar.

    python clients/openai_sdk.py [--base-url http://localhost:8000/v1]
"""

from __future__ import annotations

import argparse

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://localhost:8000/v1")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key="not-needed")
    print([m.id for m in client.models.list().data])
    response = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Hello!"}], max_tokens=30)
    print(response.choices[0].message.content, response.usage)
    stream = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=60, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage:
            print(f"\n{chunk.usage.completion_tokens} tokens")


if __name__ == "__main__":
    main()
