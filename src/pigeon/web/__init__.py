"""The web endpoint: ACME certificates (``acme``), the MTA-STS policy (``mtasts``), mail client
autoconfiguration (``clientconfig``), metrics (``metrics``) and the aiohttp routes (``http``).
The sockets and TLS contexts are made by ``app.web`` (``net``'s rule: socket/ssl only there)."""
