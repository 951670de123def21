"""The REST sidecar: a stateless aiohttp transcoder onto the gRPC calls.

``http/`` is the toolkit every surface uses; each surface package holds its
``protocol`` (request and response models), ``translate`` (pure REST ⇄ proto),
``events`` (the stream) and ``routes`` (its operations); ``app`` composes them.
"""
