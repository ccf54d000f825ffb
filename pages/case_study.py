"""Case study page: a student enters a clinical case and the model reasons about it."""

import streamlit as st

from app import auth, resources

auth.require_role("student", "instructor", "admin")

st.title("Case study")
settings = resources.get_settings()
with st.status("Loading the model…", expanded=False) as status:
    served = resources.get_served_model(settings.base_model, resources.active_adapter_path(), settings.device)
    status.update(label=f"Model ready: {served.base.identity} · adapter {served.adapter_name}", state="complete")
st.info("Streaming case studies are not available yet.")
