"""Sans-IO POP3 (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH, RFC 2595 STLS): the server role.

Modules: ``events`` (the typed commands the core emits), ``responses`` (``+OK``/``-ERR`` values,
multi-line bodies and dot-stuffing, CAPA lines), ``commands`` (one command line → one event),
``message`` (TOP's cut of a message), ``server`` (``ServerConnection``, the state machine),
``errors``. No asyncio, sockets, files or clock anywhere in this package.
"""
