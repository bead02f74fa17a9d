"""The ``covidcxr`` application: its command groups, the options every group shares, and
``--version``. The commands register themselves from their modules (:mod:`covidcxr.cli`)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="covidcxr",
    help="COVID-19 and viral pneumonia on chest X-rays (research use only, not a diagnostic "
    "device).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no "<bool>" beside flags, no box drawing in logs
)
data_app = typer.Typer(
    help="Inspect, generate, split and cache datasets.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(data_app, name="data")
segment_app = typer.Typer(
    help="Lung segmentation: train, predict, evaluate.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(segment_app, name="segment")

Classes = Annotated[
    int, typer.Option("--classes", help="3 (Normal, COVID, Viral Pneumonia) or 4 (+ Lung Opacity).")
]
Workers = Annotated[
    int | None, typer.Option(help="Decoding processes (default: all cores, at most 8).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
AllowOutside = Annotated[
    bool,
    typer.Option(
        "--allow-outside", help="Let a CSV manifest name files outside the manifest's folder."
    ),
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"covidcxr {version('covidcxr')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """COVID-19 and viral pneumonia on chest X-rays — research use only."""


def run() -> None:  # pragma: no cover - console-script shim
    app()
