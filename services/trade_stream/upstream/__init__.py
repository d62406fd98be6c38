"""Upstream clients: the connections to Alpaca (market data, trading stream) and its REST API."""
