"""The takler server: scheduler, service and jobs in one Trio nursery."""

from takler.server.server import ServerState, TaklerServer

__all__ = ["ServerState", "TaklerServer"]
