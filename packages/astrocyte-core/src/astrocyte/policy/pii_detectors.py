"""PII detectors: find spans of personal data and secrets in text.

Each detector yields ``(start, end)`` spans. Patterns are compiled once and written to run in linear
time: every variable-length run is bounded or anchored by a look-behind that stops the engine from
re-scanning the same run from every position, and validation (Luhn, mod-97, ``ipaddress``,
``phonenumbers``) happens in Python on the few candidates, never in the regex.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence

Span = tuple[int, int]
Detector = Callable[[str], Iterator[Span]]


# -- validators ----------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """Luhn checksum over a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616 check: length 15-34, country letters, check digits, mod-97 == 1."""
    iban = candidate.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# -- regex detectors -----------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,10}[A-Za-z]{2,63}(?![A-Za-z0-9\-])"
)
_CARD = re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d])")
_SSN = re.compile(r"(?<![\d\-])(\d{3})([\- ])(\d{2})\2(\d{4})(?![\d\-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![\w:])"
)
_PHONE_CANDIDATE = re.compile(r"(?<![\w+(])(?:\+|\()?\d[\d() .\-]{5,30}\d(?![\w])")

# Secrets: a named group ``v`` marks the part to redact (keeps "Bearer " or "password=" readable).
_SECRET_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"(?i:\bbearer)[ \t]+(?P<v>[A-Za-z0-9\-._~+/]{16,4096}=*)",
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b",
        r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
        r"\bxox[abprse]-[A-Za-z0-9\-]{10,255}",
        r"\bxapp-\d-[A-Za-z0-9\-]{10,255}",
        r"(?<![A-Za-z0-9_\-])sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_\-]{20,255}",
        r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,255}\b",
        r"\bAIza[0-9A-Za-z\-_]{35}(?![0-9A-Za-z\-_])",
        r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{5,4096}\.eyJ[A-Za-z0-9_\-]{5,8192}\.[A-Za-z0-9_\-]{10,4096}",
        r"(?i:\b(?:aws_secret_access_key|api[_\-]?key|secret[_\-]?key|client[_\-]?secret|access[_\-]?token"
        r"|auth[_\-]?token|password|passwd))[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?(?P<v>[^\s\"']{8,512})",
    )
)
_KEY_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_KEY_END = re.compile(r"-----END (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----")


def detect_email(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield m.span()


def detect_payment_card(text: str) -> Iterator[Span]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ \-]", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield m.span()


def detect_us_ssn(text: str) -> Iterator[Span]:
    for m in _SSN.finditer(text):
        if ssn_valid(m.group(1), m.group(3), m.group(4)):
            yield m.span()


def detect_iban(text: str) -> Iterator[Span]:
    for m in _IBAN.finditer(text):
        # Greedy matching may swallow a following word-group; retry shorter at group boundaries.
        value, start = m.group(), m.start()
        while len(value.replace(" ", "")) >= 15:
            if iban_valid(value):
                yield start, start + len(value)
                break
            cut = value.rfind(" ")
            if cut < 0:
                break
            value = value[:cut]


def detect_ip_address(text: str) -> Iterator[Span]:
    for m in _IPV4.finditer(text):
        try:
            ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        yield m.span()
    if ":" not in text:
        return
    for m in _IPV6.finditer(text):
        value = m.group()
        # A digit is required so C++-style "Cafe::Bad" is not taken for an address.
        if not any(ch.isdigit() for ch in value):
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield m.span()


def detect_secret(text: str) -> Iterator[Span]:
    for pattern in _SECRET_PATTERNS:
        for m in pattern.finditer(text):
            yield m.span("v") if "v" in pattern.groupindex else m.span()
    yield from _private_key_blocks(text)


def _private_key_blocks(text: str) -> Iterator[Span]:
    if "PRIVATE KEY" not in text:
        return
    pos = 0
    while (begin := _KEY_BEGIN.search(text, pos)) is not None:
        end = _KEY_END.search(text, begin.end())
        if end is None:
            # An unterminated block is still key material: redact to the end of the text.
            yield begin.start(), len(text)
            return
        yield begin.start(), end.end()
        pos = end.end()


def make_phone_detector(regions: Sequence[str]) -> Detector:
    """Phone numbers: international (``+`` prefix) for every country, national forms for ``regions``.

    Uses ``phonenumbers`` (Google's libphonenumber metadata) to validate candidates when it is
    installed; otherwise a structural check (8-15 digits with ``+``, or a NANP 10-digit number).
    """
    try:
        import phonenumbers
    except ImportError:  # pragma: no cover - exercised only without the dependency
        return _structural_phone_detector()

    def valid(candidate: str) -> bool:
        try:
            if candidate.startswith("+"):
                return bool(phonenumbers.is_valid_number(phonenumbers.parse(candidate, None)))
            for region in regions:
                if phonenumbers.is_valid_number(phonenumbers.parse(candidate, region)):
                    return True
        except phonenumbers.NumberParseException:
            return False
        return False

    return _phone_detector(valid)


_NANP = re.compile(r"(?:1[ .\-]?)?\(?[2-9]\d{2}\)?[ .\-]?[2-9]\d{2}[ .\-]?\d{4}")


def _structural_phone_detector() -> Detector:
    def valid(candidate: str) -> bool:
        digits = re.sub(r"\D", "", candidate)
        if candidate.startswith("+"):
            return 8 <= len(digits) <= 15
        return _NANP.fullmatch(candidate) is not None

    return _phone_detector(valid)


def _phone_detector(valid: Callable[[str], bool]) -> Detector:
    def detect(text: str) -> Iterator[Span]:
        for m in _PHONE_CANDIDATE.finditer(text):
            yield from _valid_phone_parts(m.group(), m.start(), valid)

    return detect


_MAX_SPLIT_TOKENS = 8


def _valid_phone_parts(candidate: str, offset: int, valid: Callable[[str], bool]) -> Iterator[Span]:
    digit_count = sum(ch.isdigit() for ch in candidate)
    if 7 <= digit_count <= 15 and valid(candidate):
        yield offset, offset + len(candidate)
        return
    if " " in candidate:
        # Two numbers separated only by a space arrive as one candidate: try runs of its tokens.
        yield from _split_candidates(candidate, offset, valid)


def _split_candidates(candidate: str, offset: int, valid: Callable[[str], bool]) -> Iterator[Span]:
    """Greedy left to right: the longest valid run of space-separated tokens, then continue.

    Bounded (few tokens, 7-15 digits per piece) so a run of digits and spaces stays linear.
    """
    tokens = [
        (m.start(), m.end(), sum(ch.isdigit() for ch in m.group())) for m in re.finditer(r"[^ ]+", candidate)
    ]
    if len(tokens) > _MAX_SPLIT_TOKENS:
        return
    i = 0
    while i < len(tokens):
        for j in range(len(tokens), i, -1):
            digits = sum(t[2] for t in tokens[i:j])
            piece = candidate[tokens[i][0] : tokens[j - 1][1]]
            if 7 <= digits <= 15 and valid(piece):
                yield offset + tokens[i][0], offset + tokens[j - 1][1]
                i = j
                break
        else:
            i += 1


def build_detectors(phone_regions: Sequence[str]) -> dict[str, Detector]:
    """Every detector by PII type name (see ``astrocyte.policy.config.PII_TYPES``)."""
    return {
        "secret": detect_secret,
        "payment_card": detect_payment_card,
        "iban": detect_iban,
        "us_ssn": detect_us_ssn,
        "email": detect_email,
        "ip_address": detect_ip_address,
        "phone": make_phone_detector(phone_regions),
    }
