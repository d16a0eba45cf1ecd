"""Password hashing for local accounts: scrypt with a per-user random salt.

Stored form: ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``, so the cost
parameters can be raised later without breaking existing hashes
(:func:`needs_rehash`). Verification compares in constant time. One
verification costs about 40 ms of CPU (n = 2**14, r = 8): callers in an event
loop run it in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SCRYPT_LOG2_N = 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_PASSWORD_BYTES = 1024  # longer inputs are refused before hashing (no CPU/memory abuse)
_MAXMEM = 64 * 1024 * 1024


def _derive(password: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=1 << log2_n, r=r, p=p, dklen=KEY_BYTES, maxmem=_MAXMEM
    )


def hash_password(password: str) -> str:
    """A new salted hash of ``password`` in the stored form."""
    raw = password.encode()
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password longer than {MAX_PASSWORD_BYTES} bytes")
    salt = os.urandom(SALT_BYTES)
    digest = _derive(raw, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return (
        f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"
    )


def verify_password(password: str, stored: str | None) -> bool:
    """True if ``password`` matches ``stored``.

    With ``stored`` None (no such user, or an account without a password) a
    dummy hash is computed anyway so the time taken does not tell whether
    the user exists; the answer is then False.
    """
    raw = password.encode()
    if len(raw) > MAX_PASSWORD_BYTES:
        return False
    if stored is None:
        _derive(raw, b"\0" * SALT_BYTES, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
        return False
    try:
        scheme, log2_n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        n_exp, r_val, p_val = int(log2_n), int(r), int(p)
    except ValueError:
        return False
    if not (10 <= n_exp <= 20 and 1 <= r_val <= 32 and 1 <= p_val <= 16):
        return False
    actual = _derive(raw, salt, n_exp, r_val, p_val)
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str) -> bool:
    """True if ``stored`` was made with weaker parameters than the current ones."""
    parts = stored.split("$")
    return (
        len(parts) != 6
        or parts[0] != "scrypt"
        or parts[1:4]
        != [
            str(SCRYPT_LOG2_N),
            str(SCRYPT_R),
            str(SCRYPT_P),
        ]
    )
