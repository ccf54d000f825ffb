"""Admin page (placeholder until its issue lands)."""

import streamlit as st

st.title("Admin")
st.info("This page is not available yet.")
