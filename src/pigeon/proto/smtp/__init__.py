"""Sans-IO SMTP: the server and client roles share this package (DESIGN.md).

Modules: ``events`` (the typed events/commands), ``server`` (``ServerConnection``), ``client``
(``ClientConnection``), ``reply`` (reply values), ``replyparse`` (bytes → Reply), ``ehlo`` (EHLO
reply and ``Extensions``), ``params`` (MAIL/RCPT arguments, xtext), ``commands`` (command lines),
``sequence`` (the state table), ``body`` (DATA/BDAT readers), ``errors``.
No asyncio, sockets, files or clock anywhere in this package.
"""
