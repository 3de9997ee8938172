"""Gradio apps: ``apps/hub.py`` (all papers, one tab each) and one thin module per paper."""
