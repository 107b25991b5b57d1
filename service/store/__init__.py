"""Shared state for all workers and hosts: rate-limit counters and idempotency records.

Two backends behind one interface: an embedded SQLite file (correct across the workers of one
host, nothing to install) and Redis (`TOXISERVE_STORE_URL=redis://...`, across hosts).
"""

from __future__ import annotations

from .base import Claim, IdempotencyBackend, Store, StoreUnavailableError, open_store

__all__ = ["Claim", "IdempotencyBackend", "Store", "StoreUnavailableError", "open_store"]
