"""Streamlit-side helpers shared by the pages: run/step picker, cached loaders, chart builders."""
