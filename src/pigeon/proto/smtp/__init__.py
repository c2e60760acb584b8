"""Sans-IO SMTP: the server and client roles share this package (DESIGN.md)."""
