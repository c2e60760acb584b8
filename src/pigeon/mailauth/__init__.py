"""Inbound mail authentication: SPF, DKIM, DMARC and ARC checks, pure decisions over DNS.

Everything here is a library for the intake: it reads a ``MailAuthDns`` (``pigeon.dns``'s
resolver implements it) and returns named results; it never refuses mail, writes headers or
reads the configuration itself (the caller does, with ``authres`` to render the headers).
``check_message`` runs them all for one message; the modules say what each check promises.
"""

from pigeon.mailauth.arc import ArcResult, verify_arc
from pigeon.mailauth.check import MessageAuth, check_message
from pigeon.mailauth.dkim import DkimResult, DkimResultKind, verify_dkim
from pigeon.mailauth.dmarc import DmarcRecord, DmarcResult, check_dmarc, header_from_domain
from pigeon.mailauth.lookup import MailAuthDns
from pigeon.mailauth.orgdomain import OrgDomains
from pigeon.mailauth.spf import SpfResult, SpfResultKind, check_spf

__all__ = ["ArcResult", "DkimResult", "DkimResultKind", "DmarcRecord", "DmarcResult",
           "MailAuthDns", "MessageAuth", "OrgDomains", "SpfResult", "SpfResultKind", "check_dmarc",
           "check_message", "check_spf", "header_from_domain", "verify_arc", "verify_dkim"]
