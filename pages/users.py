"""Users page (admins): create accounts, change roles, reset passwords, deactivate and reactivate."""

from collections.abc import Callable
from typing import Any

import streamlit as st
from sqlmodel import Session

from app import auth, resources
from services import accounts
from services.accounts import MIN_PASSWORD_LENGTH, ROLES, USERNAME_RULE, AccountError

me = auth.require_role("admin")
engine = resources.get_engine()

st.title("Users")
if "users_flash" in st.session_state:
    st.success(st.session_state.pop("users_flash"))


def _done(message: str) -> None:
    st.session_state["users_flash"] = message
    st.rerun()


def _change(action: Callable[..., Any], **kwargs: Any) -> Any:
    """One account change in its own session; a refusal is shown and gives None."""
    try:
        with Session(engine) as session:
            return action(session=session, **kwargs)
    except AccountError as exc:
        st.error(str(exc))
        return None


with Session(engine) as session:
    users = accounts.list_users(session=session)

st.dataframe(
    [
        {
            "Username": u.username,
            "Role": u.role,
            "Active": u.active,
            "Sign-in": "single sign-on" if u.oidc_subject else "password",
            "Created (UTC)": u.created_at.strftime("%Y-%m-%d %H:%M"),
        }
        for u in users
    ],
    hide_index=True,
    key="users_table",
)

st.subheader("Create an account")
with st.form("create_user", clear_on_submit=True):
    new_username = st.text_input("Username", key="new_username", help=USERNAME_RULE)
    new_password = st.text_input("Initial password", type="password", key="new_password",
                                 help=f"At least {MIN_PASSWORD_LENGTH} characters; ask the user to change it.")
    new_role = st.selectbox("Role", ROLES, key="new_role")
    if st.form_submit_button("Create account", type="primary"):
        created = _change(accounts.create_user, username=new_username, password=new_password, role=new_role)
        if created is not None:
            _done(f"Created {created.username} ({created.role}).")

st.subheader("Change an account")
by_id = {u.id: u for u in users}
chosen_id = st.selectbox("Account", list(by_id), format_func=lambda i: f"{by_id[i].username} ({by_id[i].role})",
                         key="edit_user")
chosen = by_id[chosen_id]
is_me = chosen.id == me.id
with Session(engine) as session:
    locked_until = accounts.locked_until(session=session, username=chosen.username)
if locked_until is not None:
    st.warning(f"{chosen.username} is locked out of password sign-in after repeated failures until "
               f"{locked_until:%H:%M} UTC. Resetting the password lifts the lockout.")

role_col, password_col, active_col = st.columns(3)
with role_col:
    role = st.selectbox("Role", ROLES, index=ROLES.index(chosen.role), key=f"role_{chosen.id}")
    if st.button("Change role", key="change_role", disabled=role == chosen.role):
        if _change(accounts.set_role, user_id=chosen.id, role=role) is not None:
            _done(f"{chosen.username} is now {role}.")
with password_col:
    new_pw = st.text_input("New password", type="password", key=f"reset_password_{chosen.id}")
    if st.button("Reset password", key="reset_password"):
        if _change(accounts.set_password, user_id=chosen.id, password=new_pw) is not None:
            st.session_state.pop(f"reset_password_{chosen.id}", None)
            _done(f"Password of {chosen.username} reset.")
with active_col:
    st.write("Status: **active**" if chosen.active else "Status: **deactivated**")
    if chosen.active:
        if st.button("Deactivate", key="deactivate", disabled=is_me, help="You cannot deactivate yourself."):
            if _change(accounts.set_active, user_id=chosen.id, active=False) is not None:
                _done(f"{chosen.username} is deactivated; their work is kept.")
    elif st.button("Reactivate", key="reactivate"):
        if _change(accounts.set_active, user_id=chosen.id, active=True) is not None:
            _done(f"{chosen.username} is active again.")
