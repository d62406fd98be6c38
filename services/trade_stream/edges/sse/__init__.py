"""The Server-Sent Events side-port: server.py serves it; the rest are its parts (see server.py's docstring)."""
