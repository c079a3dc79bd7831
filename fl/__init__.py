"""Federated learning engine: wire protocol, server, client, models, aggregation.

The engine never imports Streamlit; the dashboard pages import the engine.
"""

__version__ = "0.1.0"
