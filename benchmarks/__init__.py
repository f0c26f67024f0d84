"""Standard workloads and the harness that runs them on takler and ecFlow side by side."""
