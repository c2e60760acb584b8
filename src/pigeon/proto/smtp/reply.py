"""The named SMTP replies: number and meaning (RFC 5321 §4.2.2, RFC 3463, RFC 4954, RFC 3030).

The ``Reply`` value itself lives in ``pigeon.core.reply`` (the queue, delivery and bounce
stages carry replies too); it is re-exported here, so SMTP code imports the value and its
named instances from one place. Rendering rules: ``pigeon.core.reply``.
"""

from __future__ import annotations

from pigeon.core.reply import Reply as Reply

# Named replies: number and meaning (RFC 5321 §4.2.2, RFC 3463, RFC 4954, RFC 3030, RFC 7505).
C211_SYSTEM_STATUS = Reply(211, "2.0.0", "System status")
C214_HELP = Reply(214, "2.0.0", "See RFC 5321")
C221_BYE = Reply(221, "2.0.0", "Bye")
C250_OK = Reply(250, "2.0.0", "OK")
C250_SENDER_OK = Reply(250, "2.1.0", "Sender OK")
C250_RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
C250_RESET = Reply(250, "2.0.0", "Reset state")
C252_CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
C354_START_INPUT = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
C421_SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing channel")
C421_TIMEOUT = Reply(421, "4.4.2", "Timeout, closing channel")
C421_TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
C421_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing channel")
C451_LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
C452_INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage, try again later")
C452_TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
C500_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
C500_UNRECOGNIZED = Reply(500, "5.5.2", "Command not recognized")
C501_SYNTAX_PARAMS = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
C501_BAD_ADDRESS = Reply(501, "5.1.3", "Bad address syntax")
C502_NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
C503_BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
C504_PARAM_NOT_IMPLEMENTED = Reply(504, "5.5.4", "Command parameter not implemented")
C550_MAILBOX_UNAVAILABLE = Reply(550, "5.1.1", "Mailbox unavailable")
C550_BARE_NEWLINE = Reply(550, "5.5.2", "Message contains bare <CR> or <LF>, refused (see RFC 5321 §2.3.8)")
C552_MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
C552_LINE_TOO_LONG = Reply(552, "5.3.4", "Message line exceeds the hard limit, refused")
C553_MAILBOX_NAME_NOT_ALLOWED = Reply(553, "5.1.3", "Mailbox name not allowed")
C554_RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
C554_TRANSACTION_FAILED = Reply(554, "5.0.0", "Transaction failed")
C554_LOOP = Reply(554, "5.4.6", "Too many Received headers, mail loop suspected")
C555_PARAM_NOT_RECOGNIZED = Reply(555, "5.5.4", "MAIL FROM/RCPT TO parameters not recognized or not implemented")

# Added by the SMTP protocol core (proto/smtp/server.py, params.py).
C220_READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
C500_AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")  # RFC 4954 §4
C500_BAD_COMMAND_ENCODING = Reply(500, "5.5.2", "Command line is not valid UTF-8 text")
# RFC 3030 §2: after a BDAT whose size cannot be read, the octets that follow cannot be framed;
# RFC 5321 §3.8: 421 is the one reply with which a server may close the channel itself.
C421_BDAT_SYNTAX = Reply(421, "4.5.0", "Syntax: BDAT <size> [LAST]; the chunk cannot be located, closing channel")
C501_AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")  # RFC 4954 §4
# AUTH (RFC 4954 §4, §6), answered by smtpd.auth for the outcomes of auth.sasl.
C235_AUTH_OK = Reply(235, "2.7.0", "Authentication successful")  # RFC 4954 §6
# RFC 4954 §6 / RFC 3463: 4.7.0 "other or undefined security status", a temporary refusal;
# the session closes after it (421, RFC 5321 §3.8).
C421_AUTH_THROTTLED = Reply(421, "4.7.0", "Too many authentication failures, try again later")
C454_AUTH_TEMPORARY = Reply(454, "4.7.0", "Temporary authentication failure")  # RFC 4954 §6
C501_AUTH_BASE64 = Reply(501, "5.5.2", "Cannot decode the authentication response")  # RFC 4954 §4
C501_AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication response")  # RFC 4616 §2
C504_AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism")  # RFC 4954 §6
C530_AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")  # RFC 4954 §6
C535_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")  # RFC 4954 §6
# RFC 4954 §6, enhanced code from RFC 5248.
C538_ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
C503_AUTH_ALREADY = Reply(503, "5.5.1", "Already authenticated")  # RFC 4954 §4
C503_TLS_ALREADY = Reply(503, "5.5.1", "TLS already active")  # RFC 3207 §4.2
C503_BINARYMIME_NEEDS_BDAT = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT, not DATA")  # RFC 3030 §3
C553_NON_ASCII_ADDRESS = Reply(553, "5.6.7", "Non-ASCII addresses not permitted without SMTPUTF8")  # RFC 6531 §3.5
C554_NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")  # RFC 5321 §4.1.1.4
# A web request on a mail port (cross-protocol attack): closed at once, with 421 (RFC 5321 §3.8).
C421_FORBIDDEN_COMMAND = Reply(421, "4.7.0", "This is an SMTP server, not a web proxy; closing channel")
