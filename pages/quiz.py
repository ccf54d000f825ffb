"""Quiz page (placeholder until its issue lands)."""

import streamlit as st

from app import auth

auth.require_role("student", "instructor", "admin")

st.title("Quiz")
st.info("This page is not available yet.")
