"""Transport security for delivery: MTA-STS (RFC 8461), DANE (RFC 7672), REQUIRETLS (RFC 8689)
and TLS reporting (RFC 8460). ``engine.TransportPolicy`` is what the relay asks; the rest are
its parts (pure values in ``mtasts``, ``tlsa``, ``tlsrpt``; I/O in ``sts`` and ``reports``)."""
