"""Where bytes come from and go: local files hashed and pinned (with the stat cache), atomic writes, object stores
(S3, GCS, a DVC remote's content-addressed layout) and the content-addressed download cache that runs share.

Shared by the compiler (pinning inputs), the runtime (verifying and fetching them) and lineage (hashing
checkpoints). Imports nothing of ftc but its errors and canonical JSON.
"""
