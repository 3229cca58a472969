"""PII scrubbing: emails, IP addresses, Luhn-valid card numbers and phone numbers become placeholders."""
from __future__ import annotations

import ipaddress
import re
from collections import Counter

from lifecycle.params.prepare import Pii


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = int(d)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match) -> str | None:
    digits = re.sub(r"\D", "", match.group())
    # 15 (Amex), 16 (most) or 19 digits; 14-digit runs are mostly timestamps.
    return "<CREDIT_CARD>" if len(digits) in (15, 16, 19) and luhn_valid(digits) else None


def _ipv6(match: re.Match) -> str | None:
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return None
    return "<IP_ADDRESS>"


_PII = {  # kind -> (pattern, replacement or a function returning it / None to keep the match)
    "email": (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b"), "<EMAIL>"),
    "ip": (re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"),
           "<IP_ADDRESS>"),
    "ipv6": (re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*[0-9A-Fa-f])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"),
             _ipv6),
    # Issuer prefixes 2-6, written as one run of digits or in groups of four (Amex 4-6-5); Luhn decides.
    "credit_card": (re.compile(r"(?<![\w-])[2-6]\d{3}(?:(?:[ -]?\d{4}){2}[ -]?\d{1,7}|[ -]?\d{6}[ -]?\d{5})(?![\w-])"),
                    _card),
    # North American numbers (area code and exchange start 2-9), or international ones written with '+'.
    "phone": (re.compile(r"(?<![\w+./-])(?:\+[1-9]\d{0,2}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){1,4}\d{3,4}"
                         r"|(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)|[2-9]\d{2})[ .-]?[2-9]\d{2}[ .-]\d{4})(?![\w-]|\.\d)"),
              "<PHONE>"),
}
# A cheap necessary condition per kind: most documents skip the costly pattern.
_PII_HINT = {"email": re.compile("@"), "ip": re.compile(r"\d\.\d"), "ipv6": re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f:]"),
             "credit_card": re.compile(r"\d{4}"), "phone": re.compile(r"\d{3}")}
_PII_SWITCH = {"email": "email", "ip": "ip", "ipv6": "ip", "credit_card": "credit_card", "phone": "phone"}


def scrub_pii(text: str, switches: Pii = Pii()) -> tuple[str, Counter]:
    """Replace emails, IP addresses, Luhn-valid card numbers and phone numbers with placeholders."""
    counts: Counter = Counter()
    for kind, (pattern, replacement) in _PII.items():
        switch = _PII_SWITCH[kind]
        if not getattr(switches, switch) or not _PII_HINT[kind].search(text):
            continue

        def substitute(match: re.Match, replacement=replacement, switch=switch) -> str:
            new = replacement(match) if callable(replacement) else replacement
            if new is None:
                return match.group()
            counts[switch] += 1
            return new
        text = pattern.sub(substitute, text)
    return text, counts
