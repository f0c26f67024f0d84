"""The takler command line."""
