"""scrypt password hashes."""

from __future__ import annotations

from auth.passwords import MAX_PASSWORD_BYTES, hash_password, needs_rehash, verify_password


def test_hash_and_verify() -> None:
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("scrypt$14$8$1$")
    assert "correct horse" not in stored
    assert verify_password("correct horse battery staple", stored)
    assert not verify_password("correct horse battery stapler", stored)
    assert not needs_rehash(stored)


def test_salts_differ() -> None:
    assert hash_password("same password here") != hash_password("same password here")


def test_unknown_user_and_malformed_hashes_never_verify() -> None:
    assert not verify_password("anything at all", None)
    for stored in [
        "",
        "md5$abc",
        "scrypt$14$8$1$!!$!!",
        "scrypt$40$8$1$AAAA$AAAA",
        "bcrypt$1$2$3$4$5",
    ]:
        assert not verify_password("anything at all", stored)
    assert needs_rehash("scrypt$10$8$1$AAAA$AAAA")


def test_oversized_password_refused_without_hashing() -> None:
    stored = hash_password("a reasonable password")
    assert not verify_password("x" * (MAX_PASSWORD_BYTES + 1), stored)
