"""Published baselines, each a diagnostic-shaped rule the harness streams like runwatch's own (see bench/README.md)."""
