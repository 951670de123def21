"""The toolkit every REST surface uses: body parsing, error dialects, the
operation table, the stream relay, SSE, CORS, the upstream and the request context."""
