"""Accounts: creation rules, sign-in without account enumeration, roles, passwords, OIDC mapping."""

from __future__ import annotations

import logging

import pytest
from argon2 import PasswordHasher
from sqlmodel import Session

from storage import accounts, passwords
from storage.accounts import AccountError
from storage.engine import create_db_engine, upgrade_database


def test_create_user_normalises_and_hashes(session: Session) -> None:
    user = accounts.create_user(session=session, username="  Alice.M ", password="correct horse", role="instructor")
    assert user.id is not None
    assert user.username == "alice.m"
    assert user.role == "instructor" and user.active
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert "correct horse" not in user.password_hash
    assert user.created_at.tzinfo is not None


def test_create_user_lists_every_problem(session: Session) -> None:
    with pytest.raises(AccountError) as excinfo:
        accounts.create_user(session=session, username="a!", password="short", role="superuser")
    message = str(excinfo.value)
    assert "Usernames need" in message
    assert "at least 8 characters" in message
    assert "Unknown role 'superuser'" in message
    assert accounts.count_users(session=session) == 0


def test_password_rules() -> None:
    assert passwords.password_problems("correct horse") == []
    assert passwords.password_problems("        ") == ["A password cannot be only spaces."]
    assert passwords.password_problems("x" * 257) == ["Passwords may have at most 256 characters."]
    assert accounts.username_problems("ok.name-1@x") == [] and accounts.username_problems("-bad") != []
    assert accounts.normalise_username("  MiXed ") == "mixed"


def test_duplicate_username_is_refused_case_insensitively(session: Session, make_user) -> None:
    make_user("bob")
    with pytest.raises(AccountError, match="already taken"):
        accounts.create_user(session=session, username="BOB", password="another pass")
    assert accounts.count_users(session=session) == 1


def test_sso_only_account_has_no_password(session: Session) -> None:
    user = accounts.create_user(session=session, username="sso-user", password=None)
    assert user.password_hash is None


def test_lookup_functions(session: Session, make_user) -> None:
    a, b = make_user("zed"), make_user("amy", role="admin")
    assert accounts.get_user(session=session, user_id=a.id).username == "zed"
    assert accounts.get_user(session=session, user_id=10_000) is None
    assert accounts.get_user_by_username(session=session, username=" AMY ").id == b.id
    assert accounts.get_user_by_username(session=session, username="nobody") is None
    assert [u.username for u in accounts.list_users(session=session)] == ["amy", "zed"]
    assert accounts.count_users(session=session) == 2


def test_first_admin_only_on_an_empty_database(session: Session) -> None:
    admin = accounts.create_first_admin(session=session, username="root", password="correct horse")
    assert admin.role == "admin"
    with pytest.raises(AccountError, match="already exists"):
        accounts.create_first_admin(session=session, username="second", password="correct horse")
    assert accounts.count_users(session=session) == 1


def test_authenticate_accepts_the_right_password(session: Session, make_user) -> None:
    user = make_user("carol", password="s3cret passphrase")
    assert accounts.authenticate(session=session, username="Carol", password="s3cret passphrase").id == user.id


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "inactive", "sso only", "overlong"])
def test_failed_sign_in_looks_the_same_and_costs_one_verification(
    session: Session, make_user, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    make_user("dave", password="right password")
    make_user("erin", password="right password")
    accounts.set_active(session=session, user_id=accounts.get_user_by_username(session=session, username="erin").id,
                        active=False)
    accounts.create_user(session=session, username="sso-frank", password=None)
    username, password = {
        "wrong password": ("dave", "wrong password"),
        "unknown user": ("mallory", "right password"),
        "inactive": ("erin", "right password"),
        "sso only": ("sso-frank", "right password"),
        "overlong": ("dave", "x" * 10_000),
    }[case]
    calls: list[bool] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash, password):  # noqa: A002 - argon2's parameter name
            calls.append(session.in_transaction())  # hashing must not hold the database lock
            return super().verify(hash, password)

    monkeypatch.setattr(passwords, "HASHER", CountingHasher(time_cost=1, memory_cost=1024, parallelism=1))
    assert accounts.authenticate(session=session, username=username, password=password) is None
    # Exactly one argon2 verification whichever way it fails, so timing does not reveal the account.
    assert calls == [False]


def test_weak_hash_is_upgraded_on_sign_in(session: Session, make_user, monkeypatch: pytest.MonkeyPatch) -> None:
    user = make_user("gina", password="right password")
    old_hash = user.password_hash
    monkeypatch.setattr(passwords, "HASHER", PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    assert accounts.authenticate(session=session, username="gina", password="right password") is not None
    new_hash = accounts.get_user(session=session, user_id=user.id).password_hash
    assert new_hash != old_hash and "m=2048,t=2" in new_hash


def test_production_hasher_is_argon2id_with_rfc9106_parameters() -> None:
    import importlib

    fresh = importlib.reload(passwords)  # undo the test fixture's cheap hasher
    try:
        hashed = fresh.hash_password("correct horse")
        assert hashed.startswith("$argon2id$") and "m=65536,t=3,p=4" in hashed
        assert fresh.verify_password(hashed, "correct horse")
        assert not fresh.verify_password(hashed, "wrong horse")
        assert not fresh.verify_password("not a hash", "correct horse")
    finally:
        importlib.reload(passwords)


def test_roles_and_last_admin_protection(session: Session, make_user) -> None:
    admin = make_user("admin1", role="admin")
    student = make_user("stu")
    assert accounts.set_role(session=session, user_id=student.id, role="instructor").role == "instructor"
    with pytest.raises(AccountError, match="Unknown role"):
        accounts.set_role(session=session, user_id=student.id, role="owner")
    with pytest.raises(AccountError, match="only active administrator"):
        accounts.set_role(session=session, user_id=admin.id, role="student")
    with pytest.raises(AccountError, match="only active administrator"):
        accounts.set_active(session=session, user_id=admin.id, active=False)
    second = make_user("admin2", role="admin")
    assert accounts.set_role(session=session, user_id=admin.id, role="student").role == "student"
    with pytest.raises(AccountError, match="only active administrator"):
        accounts.set_active(session=session, user_id=second.id, active=False)
    with pytest.raises(AccountError, match="No account"):
        accounts.set_role(session=session, user_id=9999, role="student")


def test_deactivate_and_reactivate(session: Session, make_user) -> None:
    user = make_user("henry", password="right password")
    assert accounts.set_active(session=session, user_id=user.id, active=False).active is False
    assert accounts.authenticate(session=session, username="henry", password="right password") is None
    assert accounts.set_active(session=session, user_id=user.id, active=True).active is True
    assert accounts.authenticate(session=session, username="henry", password="right password") is not None


def test_set_password(session: Session, make_user) -> None:
    user = make_user("ivy", password="old password")
    with pytest.raises(AccountError, match="at least 8"):
        accounts.set_password(session=session, user_id=user.id, password="short")
    accounts.set_password(session=session, user_id=user.id, password="new password")
    assert accounts.authenticate(session=session, username="ivy", password="old password") is None
    assert accounts.authenticate(session=session, username="ivy", password="new password") is not None


def test_acknowledge_disclaimer_keeps_the_first_time(session: Session, make_user) -> None:
    user = make_user("jack")
    assert user.acknowledged_disclaimer_at is None
    first = accounts.acknowledge_disclaimer(session=session, user_id=user.id).acknowledged_disclaimer_at
    assert first is not None and first.tzinfo is not None
    assert accounts.acknowledge_disclaimer(session=session, user_id=user.id).acknowledged_disclaimer_at == first


def test_no_hash_or_password_in_repr_or_sql_logs(caplog: pytest.LogCaptureFixture) -> None:
    engine = create_db_engine("sqlite://")
    engine.echo = True  # the worst case: someone turns SQL logging on
    upgrade_database(engine)
    caplog.set_level(logging.DEBUG)
    with Session(engine) as session:
        user = accounts.create_user(session=session, username="kim", password="hunter2 hunter2")
        with pytest.raises(AccountError):
            accounts.create_user(session=session, username="kim", password="hunter2 hunter2")
        accounts.authenticate(session=session, username="kim", password="hunter2 hunter2")
        hashed = user.password_hash
        shown = repr(user) + str(user)
    assert "INSERT INTO users" in caplog.text  # logging really was on
    assert hashed not in caplog.text and "hunter2" not in caplog.text
    assert hashed not in shown and "password_hash" not in shown


# -- OpenID Connect ----------------------------------------------------------------------------------------------


def test_role_from_claims_never_grants_admin() -> None:
    assert accounts.role_from_claims({"roles": ["admin"]}) == "student"
    assert accounts.role_from_claims({"groups": "staff, Instructor"}) == "instructor"
    assert accounts.role_from_claims({"roles": ["admin", "instructor"]}) == "instructor"
    assert accounts.role_from_claims({"role": "admin", "is_admin": True}) == "student"
    assert accounts.role_from_claims({}) == "student"


def test_oidc_subject_needs_sub() -> None:
    assert accounts.oidc_subject({"iss": "https://idp", "sub": "42"}) == "https://idp|42"
    assert accounts.oidc_subject({"iss": "https://idp", "email": "x@y"}) is None


def test_oidc_first_sign_in_creates_a_student_without_password(session: Session, make_user) -> None:
    make_user("lee")  # the preferred username is taken: the new account gets another name
    claims = {"iss": "https://idp", "sub": "abc", "preferred_username": "Lee", "roles": ["admin"]}
    user = accounts.user_for_oidc(session=session, claims=claims)
    assert user is not None and user.role == "student" and user.password_hash is None
    assert user.username == "lee-2" and user.oidc_subject == "https://idp|abc"
    again = accounts.user_for_oidc(session=session, claims=claims)
    assert again.id == user.id
    assert accounts.count_users(session=session) == 2


def test_oidc_role_comes_from_our_table_after_creation(session: Session) -> None:
    claims = {"iss": "i", "sub": "s1", "email": "teacher@uni.edu", "groups": ["instructor"]}
    user = accounts.user_for_oidc(session=session, claims=claims)
    assert user.role == "instructor" and user.username == "teacher@uni.edu"
    accounts.set_role(session=session, user_id=user.id, role="student")
    assert accounts.user_for_oidc(session=session, claims=claims).role == "student"


def test_oidc_disabled_missing_and_no_subject(session: Session) -> None:
    claims = {"iss": "i", "sub": "s2", "name": "Zo"}
    assert accounts.user_for_oidc(session=session, claims=claims, create_missing=False) is None
    user = accounts.user_for_oidc(session=session, claims=claims)
    assert user.username == "zo-sso"
    accounts.set_active(session=session, user_id=user.id, active=False)
    assert accounts.user_for_oidc(session=session, claims=claims) is None
    assert accounts.user_for_oidc(session=session, claims={"email": "x@y.z"}) is None
