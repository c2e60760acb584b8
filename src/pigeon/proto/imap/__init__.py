"""Sans-IO IMAP (RFC 3501, RFC 9051): bytes in, typed commands out; response bytes built by helpers.

Modules:
- ``connection``: ``ImapServerConnection``, the framing core (lines, literals ``{n}``/``{n+}``/``~{n}``,
  continuation requests, limits) that turns octets into ``events``.
- ``events``: the framing events (``Command``, ``NeedContinuation``, ``LiteralTooBig``, ``LiteralData``,
  ``BadCommand``, ``RawLine``, ``ConnectionClosed``).
- ``reader``: the cursor over a framed command and the generic tokenizer.
- ``parser`` (+ ``parse_mailbox``, ``parse_fetch``, ``parse_search``, and ``args`` for shared
  terminals): a framed ``Command`` → one of the typed values in ``commands``; syntax errors
  raise ``errors.ParseError`` (``errors.CharsetError`` for an unsupported SEARCH charset).
- ``seqset``: sequence sets (``1:*,5``, ``$``), resolution, compact UID rendering.
- ``listmatch``: LIST/LSUB pattern matching (``*``, ``%``) in linear time.
- ``mutf7``: modified UTF-7 mailbox names (RFC 3501 §5.1.3).
- ``dates``: RFC 3501 date / date-time parsing and INTERNALDATE formatting.
- ``serialize``: response writers (atoms, quoted strings, literals, lists, tagged/untagged lines).

No asyncio, sockets, files or clock anywhere in this package (DESIGN.md, "proto").
"""
