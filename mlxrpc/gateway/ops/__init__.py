"""The operator's routes: /health, /ready and /metrics."""
