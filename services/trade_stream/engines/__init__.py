"""Engines: what crosses process boundaries (leadership, interest, market data, the order log); see base.py."""
