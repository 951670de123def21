"""OpenAI's embeddings route."""
