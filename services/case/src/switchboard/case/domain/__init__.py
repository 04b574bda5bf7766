"""Pure case logic: no I/O."""
