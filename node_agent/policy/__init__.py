"""Recycling policies. Each one decides from observations; :mod:`node_agent.actions` acts."""
