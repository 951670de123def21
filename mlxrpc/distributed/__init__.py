"""Serving one model sharded over several processes (tensor or pipeline parallel).

Rank 0 runs the whole server (gRPC, sidecar, engine core); every other rank
only computes: it loads its shard and repeats rank 0's batch operations in
lockstep, told what changed before every step (lockstep.py). mlx-lm does the
sharding (``model.shard(group)``, ``model.model.pipeline(group)``).
"""
