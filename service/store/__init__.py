"""Shared state for all workers and hosts: rate-limit counters and idempotency records.

Two backends behind one interface: an embedded SQLite file (correct across the workers of one
host, nothing to install) and Redis (`TOXISERVE_STORE_URL=redis://...`, across hosts);
`factory.open_store` picks one by URL. It may import observability and the ground files.
"""

from __future__ import annotations

from service.store.base import Claim, IdempotencyBackend, Store, StoreUnavailableError
from service.store.factory import open_store

__all__ = ["Claim", "IdempotencyBackend", "Store", "StoreUnavailableError", "open_store"]
