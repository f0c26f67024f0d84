"""Clients of the takler server: the async user client and the child client jobs use."""
