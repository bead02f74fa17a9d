"""``python -m covidcxr`` runs the command line."""

from covidcxr.cli import app

app()
