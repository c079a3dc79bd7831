"""The Streamlit entry point: ``streamlit run app.py``.

Page config and navigation only; each page lives in app_pages/.
"""

import streamlit as st

from ui.app_state import restore_from_url, sync_url

st.set_page_config(page_title="Federated learning workbench", page_icon=":material/hub:", layout="wide")

navigation = st.navigation([
    st.Page("app_pages/run.py", title="Run", icon=":material/play_circle:", default=True),
    st.Page("app_pages/clients.py", title="Clients", icon=":material/devices:"),
    st.Page("app_pages/runs.py", title="Runs", icon=":material/history:"),
    st.Page("app_pages/sweep.py", title="Sweep", icon=":material/grid_view:"),
    st.Page("app_pages/deploy.py", title="Deploy", icon=":material/lan:"),
])
restore_from_url()  # a reload finds this tab's run (the URL names it) before any page draws
sync_url()
navigation.run()
