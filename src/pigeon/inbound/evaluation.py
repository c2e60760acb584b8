"""One DMARC evaluation, as recorded for the aggregate reports (RFC 7489 §7.2), and the
published policy it was made under.

Rules:
1. An ``Evaluation`` holds what RFC 7489 Appendix C's ``<record>`` needs: the source IP, the
   header From domain, the envelope domain (MAIL FROM's, or HELO's for ``<>``), the DKIM
   domains with their results, the SPF domain and result, the disposition, the aligned
   results, and the published policy (``Published``) with its ``rua`` addresses.
2. It is plain data with ``to_json``/``from_json`` (one JSON line per evaluation in the
   recorder's file, ``inbound.reports``); ``from_json`` refuses anything malformed with
   ``ValueError``. ``to_line`` is ``to_json`` written as that line without building the dict
   (the policy's part made once per policy): the same JSON, at a fraction of the cost, since it
   runs for every message (tests hold the two equal).
3. ``published`` reads the policy from the DMARC record object that ``pigeon.mailauth`` gives
   (attributes ``p``, ``sp``, ``pct``, ``adkim``, ``aspf``, ``rua``), with RFC 7489 §6.3's
   defaults for what it lacks.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

# json's own C string encoder: a JSON string literal, quotes and escapes included, ASCII only.
_q = json.encoder.encode_basestring_ascii


@dataclass(frozen=True, slots=True)
class Published:
    domain: str  # the domain whose record applied (the organisational domain for sp=)
    p: str = "none"
    sp: str = ""
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    rua: tuple[str, ...] = ()  # mailto: URIs as published (RFC 7489 §6.4)


def _text(obj: object, name: str, default: str) -> str:
    value = getattr(obj, name, None)
    return str(value) if isinstance(value, str) and value else default


# Rule 3's answer for a record seen before: a busy sender domain's record is the same object for
# every message (pigeon.mailauth memoises its parse). Bounded like that memo.
MAX_MEMO = 1024


def published(record: object, domain: str) -> Published:
    """Rule 3 (memoised when the record is hashable, as pigeon.mailauth's DmarcRecord is)."""
    try:
        return _published_memo(record, domain)
    except TypeError:  # an unhashable record object
        return _published(record, domain)


def _published(record: object, domain: str) -> Published:
    if record is None:
        return Published(domain)
    pct = getattr(record, "pct", 100)
    rua = getattr(record, "rua", ())
    if isinstance(rua, str):
        rua = tuple(u.strip() for u in rua.split(",") if u.strip())
    return Published(domain, _text(record, "p", "none"), _text(record, "sp", ""),
                     pct if isinstance(pct, int) and not isinstance(pct, bool) else 100,
                     _text(record, "adkim", "r")[:1], _text(record, "aspf", "r")[:1],
                     tuple(str(u) for u in rua) if isinstance(rua, (tuple, list)) else ())


_published_memo = functools.lru_cache(maxsize=MAX_MEMO)(_published)


@dataclass(frozen=True, slots=True)
class Evaluation:
    when: float  # seconds since the epoch
    source_ip: str
    header_from: str
    envelope_from: str
    dkim: tuple[tuple[str, str, str], ...]  # (domain, selector, result) per signature
    spf_domain: str
    spf_scope: str  # mfrom | helo
    spf_result: str
    disposition: str  # none | quarantine | reject (RFC 7489 Appendix C DispositionType)
    dkim_aligned: bool
    spf_aligned: bool
    policy: Published
    override: str = ""  # "trusted_forwarder" when an ARC chain let a failure through

    def to_json(self) -> dict[str, object]:
        p = self.policy
        return {"when": self.when, "ip": self.source_ip, "from": self.header_from,
                "env": self.envelope_from, "dkim": [list(d) for d in self.dkim],
                "spf": [self.spf_domain, self.spf_scope, self.spf_result],
                "disp": self.disposition, "da": self.dkim_aligned, "sa": self.spf_aligned,
                "pol": {"d": p.domain, "p": p.p, "sp": p.sp, "pct": p.pct, "adkim": p.adkim,
                        "aspf": p.aspf, "rua": list(p.rua)},
                "ovr": self.override}

    def to_line(self) -> bytes:
        """Rule 2: ``to_json`` as one compact JSON line, with its newline."""
        dkim = ",".join(f"[{_q(d)},{_q(s)},{_q(r)}]" for d, s, r in self.dkim)
        return (f'{{"when":{float(self.when)!r},"ip":{_q(self.source_ip)},"from":{_q(self.header_from)},'
                f'"env":{_q(self.envelope_from)},"dkim":[{dkim}],'
                f'"spf":[{_q(self.spf_domain)},{_q(self.spf_scope)},{_q(self.spf_result)}],'
                f'"disp":{_q(self.disposition)},"da":{_bool(self.dkim_aligned)},"sa":{_bool(self.spf_aligned)},'
                f'"pol":{_policy_json(self.policy)},"ovr":{_q(self.override)}}}\n').encode()

    @staticmethod
    def from_json(d: object) -> Evaluation:
        """Rule 2."""
        if not isinstance(d, dict):
            raise ValueError("malformed evaluation: not an object")
        try:
            pol = d["pol"]
            spf = d["spf"]
            if not isinstance(pol, dict) or not isinstance(spf, list) or len(spf) != 3:
                raise ValueError("pol must be an object and spf a list of 3")
            dkim = tuple((str(x[0]), str(x[1]), str(x[2])) for x in d["dkim"])
            return Evaluation(
                float(d["when"]), str(d["ip"]), str(d["from"]), str(d["env"]), dkim,
                str(spf[0]), str(spf[1]), str(spf[2]), str(d["disp"]), bool(d["da"]), bool(d["sa"]),
                Published(str(pol["d"]), str(pol["p"]), str(pol["sp"]), int(pol["pct"]),
                          str(pol["adkim"]), str(pol["aspf"]), tuple(str(u) for u in pol["rua"])),
                str(d.get("ovr", "")))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"malformed evaluation: {exc}") from None


def _bool(value: bool) -> str:
    return "true" if value else "false"


@functools.lru_cache(maxsize=MAX_MEMO)
def _policy_json(p: Published) -> str:
    """Rule 2: the ``pol`` object of a line (the same few policies all day: memoised)."""
    rua = ",".join(_q(u) for u in p.rua)
    return (f'{{"d":{_q(p.domain)},"p":{_q(p.p)},"sp":{_q(p.sp)},"pct":{int(p.pct)},"adkim":{_q(p.adkim)},'
            f'"aspf":{_q(p.aspf)},"rua":[{rua}]}}')
