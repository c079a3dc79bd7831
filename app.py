"""The Streamlit entry point: ``streamlit run app.py``.

Page config and navigation only; each page lives in pages/.
"""

import streamlit as st

st.set_page_config(page_title="Federated learning workbench", page_icon=":material/hub:", layout="wide")

navigation = st.navigation([
    st.Page("pages/run.py", title="Run", icon=":material/play_circle:", default=True),
    st.Page("pages/clients.py", title="Clients", icon=":material/devices:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
    st.Page("pages/deploy.py", title="Deploy", icon=":material/lan:"),
])
navigation.run()
