"""The labelled benchmark corpus: real CPU training runs with injected faults (see bench/README.md)."""
