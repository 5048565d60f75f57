"""What happens to one object: the S3 boundary, server-side copy, streamed transform, formats and keys.

`workers` never imports `engine` (enforced by tests/unit/test_layers.py).
"""
