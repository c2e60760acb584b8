"""Real-world-shaped test messages (CRLF), built here so each byte count can be checked by hand."""

from __future__ import annotations


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


# RFC 3501 §7.4.2 ENVELOPE example, as a message.
RFC3501 = crlf(
    "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
    "From: Terry Gray <gray@cac.washington.edu>\n"
    "Subject: IMAP4rev1 WG mtg summary and minutes\n"
    "To: imap@cac.washington.edu\n"
    "cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\n"
    "Message-Id: <B27397-0100000@cac.washington.edu>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    "\n"
    "hello\n"
    "world\n"
)

SIMPLE = crlf("From: a@example.com\nSubject: hi\n\nline one\nline two\n")

ALTERNATIVE = crlf(
    "From: a@example.com\n"
    "To: b@example.com\n"
    "Subject: alt\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/alternative; boundary="XX"\n'
    "\n"
    "preamble\n"
    "--XX\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "plain body\n"
    "--XX\n"
    "Content-Type: text/html; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "<p>caf=C3=A9</p>\n"
    "--XX--\n"
    "epilogue\n"
)

# RFC 3501 §7.4.2 BODY example shape: text part + base64 text part with a name, "Compiser".
MIXED = crlf(
    "From: Terry Gray <gray@cac.washington.edu>\n"
    "Subject: attachment\n"
    "Content-Type: MULTIPART/MIXED; BOUNDARY=\"b1\"\n"
    "\n"
    "--b1\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    "\n"
    "see attached\n"
    "--b1\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=\"cc.diff\"\n"
    "Content-ID: <960723163407.20117h@cac.washington.edu>\n"
    "Content-Description: Compiser\n"
    "Content-Transfer-Encoding: BASE64\n"
    "Content-Disposition: attachment; filename=\"cc.diff\"\n"
    "\n"
    "aGVsbG8gd29y\n"
    "bGQK\n"
    "--b1--\n"
)

NESTED = crlf(
    "From: outer@example.com\n"
    "Subject: fwd\n"
    "Content-Type: multipart/mixed; boundary=outer\n"
    "\n"
    "--outer\n"
    "\n"
    "intro\n"
    "--outer\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: inner@example.org\n"
    "Subject: inner\n"
    "Content-Type: multipart/alternative; boundary=inner\n"
    "\n"
    "--inner\n"
    "Content-Type: text/plain\n"
    "\n"
    "inner text\n"
    "--inner\n"
    "Content-Type: text/html\n"
    "\n"
    "<b>inner</b>\n"
    "--inner--\n"
    "--outer\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: x-uuencode\n"
    "\n"
    "begin 644 x\n"
    "--outer--\n"
)

RFC2231 = crlf(
    "From: a@example.com\n"
    "Content-Type: multipart/mixed; boundary=\"=_b\"\n"
    "\n"
    "--=_b\n"
    "Content-Type: application/pdf;\n"
    " name*0*=utf-8''%E2%82%AC%20rates;\n"
    " name*1=\".pdf\"\n"
    "Content-Disposition: attachment;\n"
    " filename*=iso-8859-1'en'%A3%20prices.pdf\n"
    "Content-Language: en, fr\n"
    "Content-Location: http://example.com/x.pdf\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "JVBERi0=\n"
    "--=_b--\n"
)

EIGHT_BIT = crlf(
    "From: Jörg Müller <jörg@exämple.de>\n"
    "To: =?iso-8859-1?q?Andr=E9?= <andre@example.fr>\n"
    "Subject: Grüße aus Köln\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "Schöne Grüße\n"
)
