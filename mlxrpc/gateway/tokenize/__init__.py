"""vLLM's tokenize and detokenize routes."""
