"""Password hashing with argon2id (argon2-cffi): hash, verify, rehash checks and input rules.

A hash is never logged or shown; :func:`dummy_verify` lets a sign-in for an unknown account spend
the same time as a real one, so timing does not reveal which usernames exist.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
"""Long enough for any passphrase, short enough that nobody can make the server hash megabytes."""

HASHER = PasswordHasher()
"""argon2-cffi's defaults (RFC 9106 low-memory profile: argon2id, t=3, m=64 MiB, p=4)."""


def password_problems(password: str) -> list[str]:
    """Every reason ``password`` is not acceptable as a new password (empty when it is)."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"Passwords may have at most {MAX_PASSWORD_LENGTH} characters.")
    if password and not password.strip():
        problems.append("A password cannot be only spaces.")
    return problems


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches; False for a mismatch, an over-long input or a damaged hash."""
    if len(password) > MAX_PASSWORD_LENGTH:
        password = password[:MAX_PASSWORD_LENGTH] + "\0"  # still hashed, so the time stays the same
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than :data:`HASHER` uses now."""
    try:
        return HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@cache
def _dummy_hash(parameters: tuple[int, int, int]) -> str:
    return HASHER.hash("not-a-real-password")


def dummy_verify(password: str) -> None:
    """Spend the time of one real verification (for unknown or disabled accounts)."""
    verify_password(_dummy_hash((HASHER.time_cost, HASHER.memory_cost, HASHER.parallelism)), password)
