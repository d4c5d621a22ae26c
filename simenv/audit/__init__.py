"""The bias and steering audit: measurements recorded while the env runs, steering experiments,
off-policy-evaluation checks, and the report written from a run directory."""
