"""Client-facing edges: the browser WebSocket, the SSE side-port, the Alpaca-compatible endpoints, HTTP."""
