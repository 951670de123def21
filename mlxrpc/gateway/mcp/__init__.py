"""REST routes for the engine's MCP servers (vllm-mlx's shapes)."""
