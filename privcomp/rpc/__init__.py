"""privcomp.rpc (see DESIGN.md layers)."""
