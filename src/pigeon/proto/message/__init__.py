"""The Internet Message Format (RFC 5322), sans-IO: what every stage that reads a message needs.

Modules: ``headers`` (the streaming header-section scanner: cleanup counts ``Received:`` with
it, bounce reads the original's header section, submission collects ``From:``/``Sender:``),
``date`` (the RFC 5322 §3.3 date-time). Like the rest of ``proto``: no asyncio, sockets, files
or clock; the time to format is always an argument.
"""
