"""The POP3 service (RFC 1939, RFC 2449, RFC 5034, RFC 2595) over ``net.listener``.

Modules: ``factory`` (``Pop3SessionFactory``, what the app wires into a ``Listener``),
``settings`` (``Pop3Settings``), ``session`` (one connection), ``login`` (USER/PASS/AUTH via
``auth.Authenticator``), ``maildrop`` (the snapshot and deletion marks), ``locks`` (the
in-process maildrop lock registry), ``seams`` (the store Protocols it needs), ``tls`` (STLS
and implicit TLS over a ``Stream``).
"""

from pigeon.pop3d.factory import Pop3SessionFactory
from pigeon.pop3d.locks import MaildropLocks
from pigeon.pop3d.settings import Pop3Settings

__all__ = ["MaildropLocks", "Pop3SessionFactory", "Pop3Settings"]
