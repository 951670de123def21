#!/usr/bin/env bash
# The REST sidecar with curl. Usage: clients/curl.sh [http://localhost:8000]
set -euo pipefail
BASE=${1:-http://localhost:8000}

curl -s "$BASE/health"; echo
curl -s "$BASE/v1/models"; echo
curl -s "$BASE/v1/chat/completions" -H "Content-Type: application/json" -d '{
  "model": "default", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 20}'; echo
# -N: print chunks as they arrive
curl -sN "$BASE/v1/chat/completions" -H "Content-Type: application/json" -d '{
  "model": "default", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 20,
  "stream": true}'
curl -s "$BASE/v1/completions" -H "Content-Type: application/json" -d '{
  "model": "default", "prompt": "The capital of France is", "max_tokens": 10}'; echo
