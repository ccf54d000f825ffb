"""History page (placeholder until its issue lands)."""

import streamlit as st

st.title("History")
st.info("This page is not available yet.")
