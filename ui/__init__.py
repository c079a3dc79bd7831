"""Streamlit helpers shared by the pages: state, sidebar, charts, live panel.

Only this package and app_pages/ import Streamlit; the engine (fl/) never does.
"""
