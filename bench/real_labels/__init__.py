"""Labels for real training runs (criteria in README.md)."""
