"""The Server-Sent Events side-port. ``server.py`` serves it; ``channel.py`` is a connection as the streams see
it; ``streams.py`` the template every stream kind follows; ``wire.py``, ``codecs.py``, ``client.py`` and
``views.py`` the formats and the writer.

The stream kinds live by family (``market.py``, ``private.py``, ``alerts.py``, ``events.py``) rather than in one
streams module: each family shares state of its own (hub holds and ghosts, the order fan-out, the live events
clients), and one module holding all of them would be the old single file again.
"""
