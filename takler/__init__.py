"""takler: an event-driven workflow scheduler for operational suites."""

__version__ = "0.2.0"
