"""The OpenAI REST sidecar: a stateless aiohttp transcoder onto the gRPC calls.

Three parts, as vLLM's entrypoints have them: ``schema`` (request bodies),
``translate`` (pure OpenAI ⇄ proto functions), ``app`` (routes and I/O).
"""
