"""Port 25 checks: DNS blocklists, the mail-authentication verdict, milters, DMARC reports."""
