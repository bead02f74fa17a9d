"""``covidcxr dicom``: covidcxr as a DICOM node, a C-STORE SCP (``listen``) or a DICOMweb
client (``watch``) that stores a Structured Report and a Grad-CAM Secondary Capture in each
chest X-ray's study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covidcxr.cli.app import app
from covidcxr.cli.common import fail

dicom_app = typer.Typer(
    help="covidcxr as a DICOM node: analyse chest X-rays sent by a modality or a PACS and store "
    "the results in their study (research use only).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(dicom_app, name="dicom")

Model = Annotated[
    Path, typer.Argument(help="A pretrained classifier's name, or a run / model folder.")
]
Seg = Annotated[
    Path | None,
    typer.Option("--seg", help="Lung segmentation model: lung outline and evidence share."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")]


@dicom_app.command("listen")
def listen_command(
    model: Model,
    send_to: Annotated[
        str,
        typer.Option(
            "--send-to", help="Where results go, AE@HOST:PORT (e.g. ORTHANC@pacs.local:4242)."
        ),
    ],
    seg: Seg = None,
    ae_title: Annotated[str, typer.Option(help="This node's AE title.")] = "COVIDCXR",
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 11112,
    queue: Annotated[
        Path,
        typer.Option(help="Folder of the films waiting (kept across restarts: work resumes)."),
    ] = Path("covidcxr-dicom-queue"),
    max_queued: Annotated[
        int, typer.Option(help="Films waiting at most; more are answered 'out of resources'.")
    ] = 1000,
    retry: Annotated[
        float, typer.Option(help="Seconds between tries when the destination is down.")
    ] = 30.0,
    tls_cert: Annotated[
        Path | None, typer.Option(help="This node's TLS certificate (PEM): listen over TLS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The key of --tls-cert (PEM).")] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            help="CA certificates (PEM) that peers' certificates must be signed by: required "
            "of senders when listening over TLS; verifies the destination with --send-tls."
        ),
    ] = None,
    send_tls: Annotated[
        bool, typer.Option("--send-tls", help="Send results over TLS (see --tls-ca).")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Listen for chest X-rays (C-STORE: CR, DX), analyse each, and send a Structured Report
    and a Grad-CAM Secondary Capture to --send-to, in the film's study. Other objects (CT, a
    lateral view, an SR) are accepted and ignored. Logs name films by SOP Instance UID only."""
    from covidcxr.dicomnode.scp import Destination, NodeSettings, TlsSettings

    try:
        tls = None
        if tls_cert or tls_key or tls_ca or send_tls:
            tls = TlsSettings(certificate=tls_cert, key=tls_key, ca=tls_ca)
        settings = NodeSettings(
            destination=Destination.parse(send_to),
            queue_dir=queue,
            ae_title=ae_title,
            host=host,
            port=port,
            max_queued=max_queued,
            retry_s=retry,
            tls=tls,
            listen_tls=tls_cert is not None,
            send_tls=send_tls,
        )
    except (OSError, ValueError) as error:
        message = str(error).replace("max_queued", "--max-queued").replace("retry_s", "--retry")
        raise fail(message) from None
    node = _start(settings, model, seg, quiet)
    secure = " over TLS" if settings.listen_tls else ""
    typer.echo(
        f"covidcxr: DICOM node {settings.ae_title} listening{secure} on "
        f"{settings.host}:{node.port}, results to {settings.destination}  (research use only)"
    )
    node.serve_forever()


def _start(settings, model: Path, seg: Path | None, quiet: bool):
    """The started node: models loaded, port bound, queue resumed (or the error line)."""
    from covidcxr.dicomnode.analysis import NodeModels
    from covidcxr.dicomnode.scp import DicomNode

    _log_lines(quiet)
    try:
        node = DicomNode(NodeModels(model, seg), settings)
        node.start()
    except (OSError, ValueError) as error:  # FileNotFoundError is an OSError
        raise fail(str(error)) from None
    return node


def _log_lines(quiet: bool) -> None:
    """The node's own log lines on stderr; pynetdicom's and highdicom's only when they warn
    (their INFO lines say nothing an operator needs)."""
    import logging
    import signal

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    for name in ("pynetdicom", "highdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # SIGTERM (docker stop, systemd) ends the node as Ctrl-C does: the queue folder keeps
    # what is waiting.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@dicom_app.command("watch")
def watch_command(
    model: Model,
    dicomweb: Annotated[
        str,
        typer.Option(
            "--dicomweb", help="The archive's DICOMweb root, e.g. http://pacs:8042/dicom-web"
        ),
    ],
    seg: Seg = None,
    state: Annotated[
        Path,
        typer.Option(help="File of the instances handled (a restart resumes from it)."),
    ] = Path("covidcxr-dicomweb-done.txt"),
    poll: Annotated[float, typer.Option(help="Seconds between two searches.")] = 10.0,
    quiet: Quiet = False,
) -> None:
    """Poll a DICOMweb archive (QIDO-RS) for CR / DX instances, fetch each new one (WADO-RS),
    analyse it and store a Structured Report and a Grad-CAM Secondary Capture in its study
    (STOW-RS). Logs name instances by SOP Instance UID only."""
    from covidcxr.dicomnode.analysis import NodeModels

    if not dicomweb.startswith(("http://", "https://")):
        raise fail(f"--dicomweb {dicomweb!r}: expected an http:// or https:// URL")
    if poll <= 0:
        raise fail(f"--poll should be positive, got {poll:g}")
    _log_lines(quiet)
    try:
        from dicomweb_client import DICOMwebClient

        from covidcxr.dicomnode.web import ProcessedLog, watch

        models = NodeModels(model, seg)
        ProcessedLog(state)  # readable and in a folder that can be written
        client = DICOMwebClient(dicomweb)
    except (OSError, ValueError) as error:
        raise fail(str(error)) from None
    typer.echo(f"covidcxr: watching {dicomweb} every {poll:g} s  (research use only)")
    watch(models, client, state, poll)
