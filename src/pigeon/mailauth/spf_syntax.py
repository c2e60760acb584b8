"""SPF record syntax and macros (RFC 7208 §4.5, §4.6, §5, §6, §7, §12): pure, no DNS.

Rules:
1. ``select_record(txts)`` keeps the TXT records that begin with ``v=spf1`` followed by a space
   or the end (case-insensitive, RFC 7208 §4.5); none → ``None``; more than one →
   ``SpfSyntaxError`` (permerror). A record with a byte outside 7-bit ASCII is a syntax error
   (§3: SPF records are US-ASCII; the openspf suite's "non-ascii-policy").
2. ``parse_record(text)`` checks the *whole* record before anything is evaluated (§4.6: a syntax
   error anywhere gives permerror without evaluation): every term is a directive
   (``[+-~?]mechanism``) or a modifier (``name=macro-string``). Mechanism names and macro letters
   are case-insensitive. ``redirect`` and ``exp`` may each appear once (§6); unknown modifiers are
   ignored once their macro-string is valid (§6 last paragraph). CIDR lengths follow the ABNF
   (§12: no leading zeros; ip4 0-32, ip6 0-128). A domain-spec must end in a macro or in a
   top label that is not all digits (§7.1 ``domain-end``, ``toplabel``).
3. ``expand(spec, ctx, exp=False)`` expands macros (§7.1-§7.4): ``s l o d i p v h`` always;
   ``c r t`` only in explanation text (elsewhere a syntax error). A digit transformer keeps
   that many right-hand parts and must be non-zero; ``r`` reverses; delimiters ``.-+,/_=``;
   an upper-case letter URL-escapes the value (§7.3). ``%%``, ``%_``, ``%-`` are ``%``, space,
   ``%20``. A domain-spec longer than 253 characters after expansion loses left-hand labels
   until it fits (§7.3).

What can go wrong: anything malformed raises ``SpfSyntaxError`` (the caller's permerror); no
other exception leaves this module. Work is linear in the record's length, which the resolver
caps (``pigeon.dns.resolver.MAX_TXT_ANSWER``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

Qualifier = Literal["+", "-", "~", "?"]
MechanismName = Literal["all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"]

# RFC 7208 §7.3: the expanded domain-spec is cut to 253 characters (a DNS name's text limit).
MAX_DOMAIN_TEXT = 253
# RFC 1035 §2.3.4: a label has at most 63 octets.
MAX_LABEL = 63
# A macro's digit transformer keeps that many parts; more parts than exist means "all" (§7.3).
# Parse at most this many digits so an absurd number cannot cost a big-integer conversion.
MAX_TRANSFORMER_DIGITS = 3


class SpfSyntaxError(Exception):
    """The record, or a macro in it, breaks RFC 7208's grammar: the result is permerror."""


@dataclass(frozen=True, slots=True)
class Mechanism:
    qualifier: Qualifier
    name: MechanismName
    domain_spec: str | None = None  # include/a/mx/ptr/exists: the (unexpanded) target
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # ip4/ip6
    cidr4: int = 32
    cidr6: int = 128
    text: str = ""  # the term as written, for logs and Received-SPF


@dataclass(frozen=True, slots=True)
class SpfRecord:
    mechanisms: tuple[Mechanism, ...]
    redirect: str | None = None
    exp: str | None = None


_MECHANISMS: frozenset[str] = frozenset(("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"))
_MODIFIER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*\Z")
_CIDR4 = r"(?:0|[1-9][0-9]?)"
_CIDR6 = r"(?:0|[1-9][0-9]{0,2})"
_CIDR_SUFFIX = re.compile(rf"(?:/{_CIDR4})?(?://{_CIDR6})?\Z")
_DUAL_CIDR = re.compile(rf"(?:/(?P<v4>{_CIDR4}))?(?://(?P<v6>{_CIDR6}))?\Z")
_MACRO_EXPAND = re.compile(r"%\{(?P<letter>[A-Za-z])(?P<digits>[0-9]*)(?P<reverse>[rR]?)(?P<delims>[.\-+,/_=]*)\}")
_TOPLABEL = re.compile(r"(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9])\Z")
_ALWAYS_LETTERS = frozenset("slodipvh")
_EXP_LETTERS = frozenset("crt")


def select_record(txts: Sequence[bytes]) -> str | None:
    """Rule 1: the one SPF record among a name's TXT records, or ``None``."""
    found = [t for t in txts if t[:6].lower() == b"v=spf1" and (len(t) == 6 or t[6:7] == b" ")]
    if not found:
        return None
    if len(found) > 1:
        raise SpfSyntaxError("more than one v=spf1 record (RFC 7208 §4.5)")
    try:
        return found[0].decode("ascii")
    except UnicodeDecodeError:
        raise SpfSyntaxError("the SPF record is not 7-bit ASCII (RFC 7208 §3)") from None


@functools.lru_cache(maxsize=256)  # a pure parse into frozen values; the same records come back all day
def parse_record(text: str) -> SpfRecord:
    """Rule 2: the whole record, checked before any evaluation."""
    mechanisms: list[Mechanism] = []
    redirect: str | None = None
    exp: str | None = None
    for term in text.split(" ")[1:]:  # the first word is "v=spf1" (select_record)
        if not term:
            continue  # 1*SP between terms, *SP at the end
        head = re.match(r"[A-Za-z][A-Za-z0-9_.\-]*", term)
        if head is not None and term[head.end():head.end() + 1] == "=":
            name, value = head.group().lower(), term[head.end() + 1:]
            _check_macro_string(value, exp=False)
            if name == "redirect":
                if redirect is not None:
                    raise SpfSyntaxError("redirect= appears twice (RFC 7208 §6)")
                redirect = _check_domain_spec(value)
            elif name == "exp":
                if exp is not None:
                    raise SpfSyntaxError("exp= appears twice (RFC 7208 §6)")
                exp = _check_domain_spec(value)
            continue  # unknown modifier: ignored (RFC 7208 §6)
        mechanisms.append(_parse_directive(term))
    return SpfRecord(tuple(mechanisms), redirect, exp)


def _parse_directive(term: str) -> Mechanism:
    qualifier: Qualifier = "+"
    body = term
    if body[:1] in ("+", "-", "~", "?"):
        qualifier = body[0]  # type: ignore[assignment]
        body = body[1:]
    m = re.match(r"[A-Za-z0-9]+", body)
    name = m.group().lower() if m else ""
    rest = body[m.end():] if m else body
    if name not in _MECHANISMS:
        raise SpfSyntaxError(f"unknown mechanism {term!r} (RFC 7208 §4.6.1)")
    mech: MechanismName = name  # type: ignore[assignment]
    if mech == "all":
        if rest:
            raise SpfSyntaxError(f"'all' takes no argument: {term!r}")
        return Mechanism(qualifier, mech, text=term)
    if mech in ("include", "exists"):
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"{mech} needs ':domain': {term!r}")
        return Mechanism(qualifier, mech, _check_domain_spec(rest[1:]), text=term)
    if mech == "ptr":
        spec = None
        if rest:
            if not rest.startswith(":"):
                raise SpfSyntaxError(f"bad ptr term {term!r}")
            spec = _check_domain_spec(rest[1:])
        return Mechanism(qualifier, mech, spec, text=term)
    if mech in ("a", "mx"):
        spec = None
        cidr_at = _cidr_start(rest)
        cidr = rest[cidr_at:]
        if rest[:cidr_at]:
            if not rest.startswith(":"):
                raise SpfSyntaxError(f"bad {mech} term {term!r}")
            spec = _check_domain_spec(rest[1:cidr_at])
        c = _DUAL_CIDR.match(cidr)
        if c is None:
            raise SpfSyntaxError(f"bad CIDR length in {term!r} (RFC 7208 §5.6)")
        v4 = int(c.group("v4")) if c.group("v4") is not None else 32
        v6 = int(c.group("v6")) if c.group("v6") is not None else 128
        if v4 > 32 or v6 > 128:
            raise SpfSyntaxError(f"CIDR length out of range in {term!r}")
        return Mechanism(qualifier, mech, spec, cidr4=v4, cidr6=v6, text=term)
    # ip4 / ip6
    if not rest.startswith(":"):
        raise SpfSyntaxError(f"{mech} needs ':network': {term!r}")
    addr, slash, length = rest[1:].partition("/")
    pattern = _CIDR4 if mech == "ip4" else _CIDR6
    if slash and re.fullmatch(pattern, length) is None:
        raise SpfSyntaxError(f"bad prefix length in {term!r}")
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
            ipaddress.IPv4Address(addr) if mech == "ip4" else ipaddress.IPv6Address(addr))
        prefix = int(length) if slash else ip.max_prefixlen
        network = ipaddress.ip_network((ip, prefix), strict=False)
    except ValueError as exc:
        raise SpfSyntaxError(f"bad network in {term!r}: {exc}") from None
    return Mechanism(qualifier, mech, network=network, text=term)


def _cidr_start(rest: str) -> int:
    """Where the trailing dual-cidr-length starts in ``[:domain-spec][/n][//n]``: the leftmost
    position from which the rest is a valid CIDR suffix, so that a domain-spec may itself
    contain "/" (``a:foo:bar/baz.example.com``, RFC 7208 §7.1 ``macro-literal``)."""
    m = _CIDR_SUFFIX.search(rest)
    return m.start() if m else len(rest)


def _check_macro_string(value: str, *, exp: bool) -> None:
    """A macro-string's syntax (§7.1): raises ``SpfSyntaxError``."""
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "%":
            nxt = value[i + 1:i + 2]
            if nxt in ("%", "_", "-"):
                i += 2
                continue
            m = _MACRO_EXPAND.match(value, i)
            if m is None:
                raise SpfSyntaxError(f"bad macro at {value[i:i + 12]!r} (RFC 7208 §7.1)")
            _check_letter(m, exp=exp)
            i = m.end()
            continue
        if not "\x21" <= ch <= "\x7e" and not (exp and ch == " "):  # explain-string: SP too
            raise SpfSyntaxError(f"character {ch!r} not allowed in {value!r}")
        i += 1


def _check_letter(m: re.Match[str], *, exp: bool) -> None:
    letter = m.group("letter").lower()
    if letter not in _ALWAYS_LETTERS and not (exp and letter in _EXP_LETTERS):
        raise SpfSyntaxError(f"macro letter {m.group('letter')!r} not allowed here (RFC 7208 §7.2)")
    digits = m.group("digits")
    if digits and int(digits[:MAX_TRANSFORMER_DIGITS + 1]) == 0:
        raise SpfSyntaxError("a macro's digit transformer must be non-zero (RFC 7208 §7.3)")


def _check_domain_spec(spec: str) -> str:
    """``domain-spec = macro-string domain-end`` (§7.1)."""
    if not spec:
        raise SpfSyntaxError("empty domain-spec")
    _check_macro_string(spec, exp=False)
    if spec.endswith("}") and _MACRO_EXPAND.search(spec) is not None:
        last = list(_MACRO_EXPAND.finditer(spec))[-1]
        if last.end() == len(spec):
            return spec  # domain-end = macro-expand
    if spec.endswith(("%%", "%_", "%-")):
        return spec
    body = spec[:-1] if spec.endswith(".") else spec
    top = body.rsplit(".", 1)
    if len(top) != 2 or _TOPLABEL.match(top[1]) is None:
        raise SpfSyntaxError(f"{spec!r} does not end in a valid top label (RFC 7208 §7.1)")
    return spec


@dataclass(frozen=True, slots=True)
class MacroContext:
    """The values the macro letters stand for (RFC 7208 §7.2)."""

    sender: str  # s
    domain: str  # d
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address  # i, c, v
    helo: str  # h
    receiver: str = "unknown"  # r
    timestamp: int = 0  # t
    validated: str = "unknown"  # p (resolved by the caller before expansion)


def uses_p_macro(spec: str) -> bool:
    if "%" not in spec:  # no macro at all (most domain-specs): no scan
        return False
    return any(m.group("letter").lower() == "p" for m in _MACRO_EXPAND.finditer(spec))


def _letter_value(letter: str, ctx: MacroContext) -> str:
    local, _, odomain = ctx.sender.rpartition("@")
    if letter == "s":
        return ctx.sender
    if letter == "l":
        return local
    if letter == "o":
        return odomain
    if letter == "d":
        return ctx.domain
    if letter == "i":
        if ctx.ip.version == 4:
            return str(ctx.ip)
        # nibbles, upper-case as in RFC 7208 §7.4's example ("1.0.B.C.0...")
        return ".".join(ctx.ip.exploded.replace(":", "").upper())
    if letter == "v":
        return "in-addr" if ctx.ip.version == 4 else "ip6"
    if letter == "h":
        return ctx.helo
    if letter == "c":
        return str(ctx.ip)
    if letter == "r":
        return ctx.receiver
    if letter == "t":
        return str(ctx.timestamp)
    return ctx.validated  # "p"


def expand(spec: str, ctx: MacroContext, *, exp: bool = False) -> str:
    """Rule 3: the macro-string with every macro replaced."""
    if "%" not in spec and spec.isascii() and spec.isprintable() and (exp or " " not in spec):
        # No macro (most domain-specs: ``include:_spf.example.net``), and only the characters
        # _check_macro_string allows (%x21-7E, SP in an explain-string): the text itself.
        return spec if exp else _truncate(spec)
    _check_macro_string(spec, exp=exp)
    out: list[str] = []
    i = 0
    while i < len(spec):
        ch = spec[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        nxt = spec[i + 1]
        if nxt in ("%", "_", "-"):
            out.append({"%": "%", "_": " ", "-": "%20"}[nxt])
            i += 2
            continue
        m = _MACRO_EXPAND.match(spec, i)
        if m is None:  # unreachable: _check_macro_string passed
            raise SpfSyntaxError(f"bad macro in {spec!r}")
        out.append(_expand_one(m, ctx))
        i = m.end()
    text = "".join(out)
    if not exp:
        text = _truncate(text)
    return text


def _expand_one(m: re.Match[str], ctx: MacroContext) -> str:
    letter = m.group("letter")
    value = _letter_value(letter.lower(), ctx)
    delims = m.group("delims") or "."
    parts = re.split("[" + re.escape(delims) + "]", value)
    if m.group("reverse"):
        parts.reverse()
    digits = m.group("digits")
    if digits:
        keep = int(digits[:MAX_TRANSFORMER_DIGITS])
        parts = parts[-keep:]
    result = ".".join(parts)
    if letter.isupper():  # §7.3: URL-escape, RFC 3986 unreserved kept
        result = quote(result, safe="-._~")
    return result


def _truncate(name: str) -> str:
    while len(name) > MAX_DOMAIN_TEXT and "." in name:
        name = name.split(".", 1)[1]
    return name


def valid_domain(name: str) -> bool:
    """A multi-label DNS name with every label 1..63 octets (RFC 7208 §4.3, RFC 1035 §2.3.4)."""
    body = name[:-1] if name.endswith(".") else name
    labels = body.split(".")
    if len(labels) < 2 or len(body) > MAX_DOMAIN_TEXT:
        return False
    return all(0 < len(label) <= MAX_LABEL for label in labels)

