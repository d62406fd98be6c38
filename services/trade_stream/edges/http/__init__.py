"""The one HTTP shape both ports share: a ``Request``, a ``Response`` with its helpers and CORS, and a declared
``Route`` table. The main port (websockets' ``process_request``) and the SSE side-port (h11) each build a
``Request`` from their own parser and write a ``Response`` in their own framing; handlers see neither."""
