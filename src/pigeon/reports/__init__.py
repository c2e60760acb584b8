"""The aggregate reports Pigeon sends (TLS-RPT, DMARC): the registry of kinds, shared by
``pigeon reports send`` (admin) and the server's daily run (app), and when that run happens."""
