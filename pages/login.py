"""Sign-in page: the first administrator on a new installation, then sign-in and optional self-registration."""

import streamlit as st
from sqlmodel import Session

from app import auth, resources
from services import accounts
from services.accounts import MIN_PASSWORD_LENGTH, USERNAME_RULE

if auth.current_user() is not None:
    st.success("You are signed in.")
    st.stop()

with Session(resources.get_engine()) as session:
    first_start = accounts.count_users(session=session) == 0

if first_start:
    st.title("Welcome to MedReason Study")
    st.write("No accounts exist yet. Create the administrator account to start.")
    with st.form("create_admin", clear_on_submit=True):
        username = st.text_input("Username", key="admin_username", help=USERNAME_RULE)
        password = st.text_input("Password", type="password", key="admin_password",
                                 help=f"At least {MIN_PASSWORD_LENGTH} characters.")
        confirm = st.text_input("Confirm password", type="password", key="admin_confirm")
        submitted = st.form_submit_button("Create administrator", type="primary")
    if submitted:
        problem = auth.create_first_admin(username, password, confirm)
        if problem is None:
            st.rerun()
        st.error(problem)
    st.stop()

st.title("Sign in")
with st.form("sign_in", clear_on_submit=True):
    username = st.text_input("Username", key="login_username")
    password = st.text_input("Password", type="password", key="login_password")
    submitted = st.form_submit_button("Sign in", type="primary")
if submitted:
    try:
        signed_in = auth.sign_in(username, password) is not None
    except auth.SignInThrottled as exc:
        st.error(str(exc))
    else:
        if signed_in:
            st.rerun()
        st.error(auth.LOGIN_FAILED)

if auth.oidc_configured():
    st.button("Sign in with single sign-on", key="sso_login", on_click=st.login, icon=":material/key:")

if resources.get_settings().allow_self_registration:
    with st.expander("New here? Create a student account"):
        with st.form("register", clear_on_submit=True):
            new_username = st.text_input("Choose a username", key="register_username", help=USERNAME_RULE)
            new_password = st.text_input("Choose a password", type="password", key="register_password",
                                         help=f"At least {MIN_PASSWORD_LENGTH} characters.")
            new_confirm = st.text_input("Confirm password", type="password", key="register_confirm")
            registered = st.form_submit_button("Create my account")
        if registered:
            problem = auth.register_student(new_username, new_password, new_confirm)
            if problem is None:
                st.rerun()
            st.error(problem)
