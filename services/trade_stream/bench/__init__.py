"""`trade-stream bench`: the fan-out benchmark and its load clients, simulator process and baseline."""
