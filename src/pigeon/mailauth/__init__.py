"""Inbound mail authentication: SPF, DKIM, DMARC and ARC checks, pure decisions over DNS.

Everything here is a library for the intake: it reads a ``MailAuthDns`` (``pigeon.dns``'s
resolver implements it) and returns named results; it never refuses mail, writes headers or
reads the configuration itself (the caller does, with ``authres`` to render the headers).
"""

from pigeon.mailauth.arc import ArcResult, verify_arc
from pigeon.mailauth.dkim import DkimResult, DkimResultKind, verify_dkim
from pigeon.mailauth.dmarc import DmarcRecord, DmarcResult, check_dmarc, header_from_domain
from pigeon.mailauth.lookup import MailAuthDns
from pigeon.mailauth.orgdomain import OrgDomains
from pigeon.mailauth.spf import SpfResult, SpfResultKind, check_spf

__all__ = ["ArcResult", "verify_arc", "DkimResult", "DkimResultKind", "DmarcRecord", "DmarcResult", "MailAuthDns", "OrgDomains",
           "check_dmarc", "header_from_domain", "verify_dkim", "SpfResult", "SpfResultKind", "check_spf"]
