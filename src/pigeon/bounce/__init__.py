"""The bounce stage: delivery status notifications (RFC 3464, RFC 6522, RFC 3461, RFC 6533).

``dsn.Bouncer`` is what the queue manager calls; ``compose`` builds the MIME notice,
``fields`` the machine-readable report, ``original`` reads the queued message back in bounded
memory.
"""
