"""Call recording: the policy (voice.yaml `recording`), the two-channel recorder tapped on the
bridge, the envelope encryption of a finished recording, and its store (put with the case, fetch
by tenant, purge after the tenant's retention)."""
