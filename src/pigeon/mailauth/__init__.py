"""Mail authentication: SPF, DKIM, DMARC, ARC checks of inbound mail; DKIM signing, ARC sealing,
SRS and the DNS records of outbound mail. Pure decisions over a Resolver; modules are imported
by their full path."""
