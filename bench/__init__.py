"""Benchmarks of rekey against aws-cli, rclone, s3cmd and the official client-side encryption client."""
