"""Admin page (placeholder until its issue lands)."""

import streamlit as st

from app import auth

auth.require_role("admin")

st.title("Admin")
st.info("This page is not available yet.")
