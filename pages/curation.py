"""Curation page for instructors: build quiz sets, edit and import items (placeholder until its issue lands)."""

import streamlit as st

from app import auth

auth.require_role("instructor", "admin")

st.title("Curation")
st.info("This page is not available yet.")
