"""The PII barrier: every type redacted and rejected, near-misses left alone, nothing leaked."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from astrocyte.errors import PiiRejectedError
from astrocyte.policy.config import PII_TYPES, PiiBarrierConfig, PolicyConfig
from astrocyte.policy.engine import PolicyEngine
from astrocyte.policy.pii import PiiBarrier
from astrocyte.policy.pii_detectors import _structural_phone_detector, iban_valid, luhn_valid
from pydantic import ValidationError as PydanticValidationError

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nq4bX9\n-----END RSA PRIVATE KEY-----"

#: (type, value) pairs: each value alone must be detected as that type.
SAMPLES: list[tuple[str, str]] = [
    ("email", "alice.smith+notes@example.co.uk"),
    ("phone", "+44 20 7946 0958"),
    ("phone", "+1-415-555-2671"),
    ("phone", "(415) 555-2671"),
    ("phone", "+49 30 901820"),
    ("payment_card", "4111 1111 1111 1111"),
    ("payment_card", "5555-5555-5555-4444"),
    ("payment_card", "378282246310005"),
    ("us_ssn", "123-45-6789"),
    ("us_ssn", "078 05 1121"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("iban", "GB82WEST12345698765432"),
    ("ip_address", "192.168.1.10"),
    ("ip_address", "2001:db8::8a2e:370:7334"),
    ("ip_address", "fe80::1"),
    ("secret", "AKIAIOSFODNN7EXAMPLE"),
    ("secret", "ghp_" + "a1B2" * 9),
    ("secret", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"),
    ("secret", "xoxb-123456789012-abcdefghijkl"),
    ("secret", "sk-proj-" + "Ab3d" * 8),
    ("secret", "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"),
    ("secret", JWT),
    ("secret", PRIVATE_KEY),
    ("secret", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----"),
]


def barrier(**config: Any) -> PiiBarrier:
    return PiiBarrier(PiiBarrierConfig.model_validate(config))


@pytest.mark.parametrize(("pii_type", "value"), SAMPLES)
def test_each_type_is_redacted(pii_type: str, value: str) -> None:
    screened = barrier(action="redact").screen(f"note: {value} (end)")
    assert screened == f"note: [REDACTED:{pii_type}] (end)"


@pytest.mark.parametrize(("pii_type", "value"), SAMPLES)
def test_each_type_is_rejected_without_echoing_the_value(pii_type: str, value: str) -> None:
    with pytest.raises(PiiRejectedError) as info:
        barrier(action="redact", type_overrides={pii_type: "reject"}).screen(f"note: {value} (end)")
    error = info.value
    assert error.code == "pii_rejected" and error.http_status == 422
    assert error.details == {"types": [pii_type], "field": "content"}
    assert pii_type in error.message
    assert value not in str(error.to_dict())
    assert value.split()[0] not in error.message


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "iban DE89 3704 0044 0532 0130 01 fails mod-97",
        "iban GB83WEST12345698765432 fails mod-97",
        "ssn 666-45-6789 has an invalid area",
        "ssn 000-12-3456 and 900-12-3456 and 123-00-4567 and 123-45-0000",
        "not an ip 999.10.1.1, a version 1.2.3, a date 2024-01-15, a time 12:30:45",
        "C++ names Cafe::Bad and std::vector are not addresses",
        "order number 12345 and year 2026",
        "sk-short and AKIA123 are not keys",
    ],
)
def test_near_misses_are_left_alone(text: str) -> None:
    assert barrier().screen(text) == text


def test_checksums_used_by_the_detectors() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE89 3704 0044 0532 0130 01")


def test_bearer_and_assigned_secrets_keep_their_label() -> None:
    screened = barrier().screen("Authorization: Bearer abcDEF0123456789xyz== and password: hunter2hunter2")
    assert screened == "Authorization: Bearer [REDACTED:secret] and password: [REDACTED:secret]"


def test_secrets_in_json_and_env_assignments_are_redacted() -> None:
    text = '{"password": "hunter2hunter2"} aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'
    assert (
        barrier().screen(text)
        == '{"password": "[REDACTED:secret]"} aws_secret_access_key = [REDACTED:secret]'
    )


def test_unterminated_private_key_is_redacted_to_the_end() -> None:
    screened = barrier().screen("key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk")
    assert screened == "key:\n[REDACTED:secret]"


def test_two_phone_numbers_separated_by_a_space_are_both_found() -> None:
    assert (
        barrier().screen("call 415 555 2671 415 555 2672 now") == "call [REDACTED:phone] [REDACTED:phone] now"
    )


def test_national_phone_forms_follow_the_configured_regions() -> None:
    pytest.importorskip("phonenumbers", reason="national forms outside NANP need the phonenumbers package")
    uk_number = "ring 020 7946 0958 today"
    assert barrier().screen(uk_number) == uk_number
    assert barrier(phone_regions=["GB"]).screen(uk_number) == "ring [REDACTED:phone] today"


def test_structural_phone_fallback_without_phonenumbers() -> None:
    detect = _structural_phone_detector()
    text = "a +44 20 7946 0958 b (415) 555-2671 c 2024-01-15"
    assert [text[s:e] for s, e in detect(text)] == ["+44 20 7946 0958", "(415) 555-2671"]


def test_overlapping_detections_resolve_to_one_redaction() -> None:
    # A card number is also digit-shaped like a phone number; the card wins.
    assert barrier().screen("4111111111111111") == "[REDACTED:payment_card]"


def test_type_overrides_apply_per_type() -> None:
    pii = barrier(action="redact", type_overrides={"email": "reject", "ip_address": "warn"})
    assert pii.screen("from 10.0.0.1 card 4111111111111111") == "from 10.0.0.1 card [REDACTED:payment_card]"
    with pytest.raises(PiiRejectedError):
        pii.screen("bob@example.com at 10.0.0.1")


def test_disabled_detectors_do_not_run() -> None:
    assert barrier(detectors=["email"]).screen("10.0.0.1 bob@example.com") == "10.0.0.1 [REDACTED:email]"


def test_warn_keeps_the_text_and_logs_types_and_counts_only(caplog: pytest.LogCaptureFixture) -> None:
    text = "mail bob@example.com and eve@example.org, card 4111111111111111"
    with caplog.at_level(logging.DEBUG, logger="astrocyte"):
        assert barrier(action="warn").screen(text) == text
    assert "email=2" in caplog.text and "payment_card=1" in caplog.text
    for value in ("bob@example.com", "eve@example.org", "4111111111111111", "bob", "example"):
        assert value not in caplog.text


def test_redaction_logs_never_contain_the_value(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="astrocyte"):
        barrier().screen("AKIAIOSFODNN7EXAMPLE and 123-45-6789")
    assert "AKIAIOSFODNN7EXAMPLE" not in caplog.text and "123-45-6789" not in caplog.text


def test_engine_screen_is_a_no_op_without_a_barrier() -> None:
    assert PolicyEngine.from_config(PolicyConfig()).screen("bob@example.com") == "bob@example.com"
    on = PolicyEngine.from_config(PolicyConfig.model_validate({"barriers": {"pii": {}}}))
    assert on.screen("bob@example.com") == "[REDACTED:email]"


def test_unknown_pii_types_in_config_are_errors() -> None:
    with pytest.raises(PydanticValidationError, match="passport"):
        PiiBarrierConfig.model_validate({"type_overrides": {"passport": "reject"}})
    assert set(PiiBarrierConfig().detectors) == set(PII_TYPES)


PATHOLOGICAL = {
    "digits": "1" * 100_000,
    "digits and spaces": "1 " * 50_000,
    "digits and dashes": "12-" * 33_000,
    "at signs": "a@" * 50_000,
    "dotted words": "a." * 50_000,
    "colons": "1:" * 50_000,
    "hex and colons": "ab:" * 33_000,
    "key headers": "-----BEGIN PRIVATE KEY-----" * 3_700,
    "bearer words": "bearer " * 14_000,
    "jwt heads": "eyJaaaaa." * 11_000,
    "iban heads": "DE89 " * 20_000,
    "prose with pii": (
        "Mail bob@example.com, call +44 20 7946 0958, ip 10.0.0.1, card 4111111111111111. " * 1300
    )[:100_000],
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_screening_100kb_stays_fast_on_pathological_input(name: str) -> None:
    pii = barrier(action="redact")
    text = PATHOLOGICAL[name]
    started = time.perf_counter()
    pii.screen(text)
    elapsed = time.perf_counter() - started
    # Linear patterns take ~0.1 s here; a backtracking pattern would take minutes.
    assert elapsed < 3.0, f"{name}: {elapsed:.2f}s"
