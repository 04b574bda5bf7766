"""The customer self-service portal at /portal (docs/portal.md)."""
