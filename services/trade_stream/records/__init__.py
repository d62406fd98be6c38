"""Plain typed records parsed from the settings' files and URLs: accounts, users, webhook targets, Redis URL.

They sit below config, which reads each once at start and turns a ``ValueError`` into exit status 2, and below
everything that uses them. Pure: stdlib and ``trade_stream.tomltables`` (and cryptography, to read the JWT key),
no sockets, nothing of the relay.
"""
