"""privcomp.jobs (see DESIGN.md layers)."""
