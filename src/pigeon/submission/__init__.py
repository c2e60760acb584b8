"""Submission policy (RFC 6409): what an authenticated user may send.

``sender`` holds the sender binding (MAIL FROM and From:/Sender: must be the user's own
addresses); ``ratelimit`` the per-user sending limits. smtpd's submission service calls both;
they do no I/O of their own.
"""
