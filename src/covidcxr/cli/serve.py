"""``covidcxr serve``: the web service and its page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covidcxr.cli.app import app
from covidcxr.cli.common import (
    fail,
)


@app.command("serve")
def serve_command(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="A pretrained classifier's name, or a run / model folder (default: the best "
            "pretrained classifier, with the pretrained lung model)."
        ),
    ] = None,
    seg: Annotated[
        Path | None, typer.Option("--seg", help="Lung segmentation model: lung outlines.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted (413).")] = 32.0,
    timeout: Annotated[float, typer.Option(help="Seconds a request may take (504).")] = 60.0,
    max_pending: Annotated[
        int, typer.Option(help="Requests analysed or waiting at once; more get 503.")
    ] = 32,
    decode_budget_mb: Annotated[
        float,
        typer.Option(help="Memory for decoded images in flight (MiB); requests wait for it."),
    ] = 1536.0,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Host header to answer (repeatable; '*' any, '*.example.org' a domain). "
            "Default: loopback names on loopback, any name on 0.0.0.0."
        ),
    ] = None,
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, GET /model, and a page at / to drop
    X-rays on (research use only)."""
    from covidcxr.service.app import ServiceSettings, serve

    try:
        settings = ServiceSettings(
            max_upload_mb=max_upload_mb,
            timeout_s=timeout,
            max_pending=max_pending,
            decode_budget_mb=decode_budget_mb,
            allowed_hosts=tuple(allowed_host) if allowed_host else None,
        )
    except ValueError as error:
        message = str(error)
        for setting in ("max_upload_mb", "timeout_s", "max_pending", "decode_budget_mb"):
            flag = "--timeout" if setting == "timeout_s" else "--" + setting.replace("_", "-")
            message = message.replace(f"{setting}=", f"{flag} ").replace(setting, flag)
        message = message.replace("allowed_hosts", "--allowed-host")
        raise fail(message) from None

    def announce(model: str | Path, seg: str | Path | None) -> None:
        lungs = f" with lung model {seg}" if seg is not None else ""
        shown = f"[{host}]" if ":" in host else host
        typer.echo(
            f"covidcxr: serving {model}{lungs} on http://{shown}:{port}/  (research use only)"
        )

    try:
        serve(model, seg, host, port, settings, announce=announce)
    except (OSError, ValueError) as error:  # FileNotFoundError is an OSError
        raise fail(str(error)) from None
