"""Pieces of ``trade-stream bench``: load clients, a baseline relay, a counting simulator, scenario plans.

These are tools run as separate processes by the benchmark; the daemon never imports them.
"""
