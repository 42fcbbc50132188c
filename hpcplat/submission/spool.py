"""Reconciliation records of the submission layer: moved to :mod:`hpcplat.catalog.pending` (the
catalog reads them when it reconciles); this name stays for code that imports it."""

from hpcplat.catalog.pending import PendingRecord, pending, settle, spool_dir, write_pending

__all__ = ["PendingRecord", "pending", "settle", "spool_dir", "write_pending"]
