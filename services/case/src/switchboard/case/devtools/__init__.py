"""Sample data and helpers for tests, benchmarks and demos of the case service."""
