"""The hpcplat server: the catalog as a service behind a trust boundary.

``hpcplat server`` (:mod:`hpcplat.server.app`) is the one process that opens the catalog; clients
(:mod:`hpcplat.server.client`, standard library only) prove who they are with munge
(:mod:`hpcplat.server.identity`), and :mod:`hpcplat.server.policy` decides what they may do in the
API handlers (:mod:`hpcplat.server.api`). See docs/server.md.
"""
