"""Switchboard's private test infrastructure: real servers on free ports, never mocks of them."""
