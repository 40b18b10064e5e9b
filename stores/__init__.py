"""Where bytes come from and go: local files hashed and pinned (with the stat cache), atomic writes, object stores
(S3, GCS, a DVC remote's content-addressed layout), the content-addressed download cache that runs share, and the
kinds of input source (``sources/``: one module per kind, each pinned, found or fetched, and described end to end).

Shared by the compiler (pinning inputs), the runtime (verifying and fetching them) and lineage (hashing
checkpoints, describing inputs). Imports nothing of ftc but the spec and its errors.
"""
