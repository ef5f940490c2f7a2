"""runwatch benchmarks: speed scripts and the detection-quality corpus, harness and baselines (see README.md here)."""
