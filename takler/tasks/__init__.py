"""Tasks whose jobs are shell scripts, and how their scripts become jobs."""
