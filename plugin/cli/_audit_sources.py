"""Where ``therapy-cds audit`` reads and writes: local paths, fsspec URLs, a Bulk Data export.

:func:`resolve_sources` turns the command's inputs into local folders the runner reads -- a
FHIR Bulk Data export downloaded with :mod:`plugin.audit.bulk` (``--fhir-export``), remote
files staged with :mod:`plugin.audit.fsio` -- and gives a local output folder; after the audit
:meth:`Sources.publish` uploads the report when ``--out`` is a URL. Errors are one line on
stderr: exit 2 for unusable arguments, 1 when the export could not be obtained.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

if TYPE_CHECKING:
    from plugin.audit.bulk import BackendAuth, ExportRequest

EXPORT_FOLDER = "fhir-export"  # under a local --out, unless --export-dir says otherwise

FhirExport = Annotated[
    str | None,
    typer.Option(
        "--fhir-export",
        metavar="URL",
        help="Run a FHIR Bulk Data $export and audit it: the FHIR base URL (system level), "
        "BASE/Group/ID or BASE/Patient. Only the resource types the rules read are asked for.",
    ),
]
ClientId = Annotated[
    str | None,
    typer.Option(
        "--client-id",
        metavar="ID",
        help="SMART Backend Services client id registered with the EHR.",
    ),
]
PrivateKey = Annotated[
    Path | None,
    typer.Option(
        "--private-key",
        metavar="FILE",
        help="The client's private key (PEM or JWK/JWK Set; RSA signs RS384, EC P-384 ES384).",
    ),
]
KeyId = Annotated[
    str | None,
    typer.Option(
        "--key-id",
        metavar="KID",
        help="kid of the key as registered (default: the JWK's kid or thumbprint).",
    ),
]
Since = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="INSTANT",
        help="Only resources changed since then (_since): 2025-01-31 or 2025-01-31T08:00:00Z.",
    ),
]
ExportDir = Annotated[
    Path | None,
    typer.Option(
        "--export-dir",
        metavar="DIR",
        help=f"Where the export is downloaded (default OUT/{EXPORT_FOLDER}); an interrupted "
        "download resumes there on the next run.",
    ),
]


@dataclass(frozen=True, slots=True)
class ExportArgs:
    url: str | None = None
    client_id: str | None = None
    private_key: Path | None = None
    key_id: str | None = None
    since: str | None = None
    export_dir: Path | None = None


@dataclass(slots=True, weakref_slot=True)  # weakref: its folders go when it does
class Sources:
    paths: tuple[Path, ...]
    out: Path
    out_url: str | None = None  # --out as given when it is remote
    # staging and remote-output folders: removed by close(), else when the command ends
    _temporary: list[weakref.finalize[Any, Any]] = field(default_factory=list)

    @property
    def report(self) -> str:
        if self.out_url is not None:
            return f"{self.out_url.rstrip('/')}/report.html"
        return str(self.out / "report.html")

    def publish(self) -> None:
        """Upload the report files when ``--out`` is remote (exit 2 with one line if not)."""
        if self.out_url is None:
            return
        from plugin.audit import OUTPUT_FILES
        from plugin.audit.fsio import StorageError, upload_outputs

        try:
            upload_outputs(self.out, self.out_url, OUTPUT_FILES)
        except StorageError as exc:
            _fail(str(exc), 2)
        finally:
            self.close()

    def temporary(self, prefix: str) -> Path:
        """A new local folder that is removed with the command, however it ends."""
        folder = tempfile.mkdtemp(prefix=prefix)
        self._temporary.append(weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True))
        return Path(folder)

    def close(self) -> None:
        for cleanup in self._temporary:
            cleanup()
        self._temporary.clear()


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"therapy-cds audit: {message}\n")
    raise typer.Exit(code)


def resolve_sources(paths: list[str] | None, out: str, export: ExportArgs, quiet: bool) -> Sources:
    """Local inputs and output folder for the run (downloading and staging as needed)."""
    from plugin.audit.fsio import StorageError, check_writable, local_path, stage_inputs

    given = list(paths or [])
    if not given and export.url is None:
        _fail("give the files or folders to audit (PATH...), or --fhir-export URL", 2)
    prepared = _prepare(export) if export.url is not None else None  # before anything is copied
    if prepared is not None and export.export_dir is None and local_path(out) is None:
        _fail("with a remote --out, give --export-dir for the downloaded export", 2)
    sources = Sources(paths=(), out=Path())
    try:
        local_out = local_path(out)
        if local_out is None:
            check_writable(out)
            sources.out, sources.out_url = sources.temporary("therapy-cds-out-"), out
        else:
            sources.out = local_out
        local: list[Path] = []
        remote: list[str] = []
        for item in given:
            found = local_path(item)
            if found is None:
                remote.append(item)
            else:
                local.append(found)
        if remote:
            local.extend(stage_inputs(remote, sources.temporary("therapy-cds-inputs-")))
    except StorageError as exc:
        sources.close()
        _fail(str(exc), 2)
    if prepared is not None:
        folder = export.export_dir or sources.out / EXPORT_FOLDER
        if _download(*prepared, folder, quiet):
            local.append(folder)
        elif not local:
            sys.stdout.write(
                "The export holds no files of the types the audit reads"
                + (" (nothing changed since --since)" if export.since else "")
                + "; nothing to audit.\n"
            )
            raise typer.Exit(0)
    sources.paths = tuple(local)
    return sources


def _prepare(export: ExportArgs) -> tuple[ExportRequest, BackendAuth | None]:
    """The export request and its authorization, from the options (exit 2 when unusable)."""
    from plugin.audit.bulk import (
        BackendAuth,
        BulkExportError,
        ExportRequest,
        default_scope,
        load_client_key,
        parse_since,
    )

    assert export.url is not None
    if (export.client_id is None) != (export.private_key is None):
        _fail("--client-id and --private-key go together (SMART Backend Services)", 2)
    try:
        since: datetime | None = parse_since(export.since) if export.since else None
        request = ExportRequest(export.url, since)
        request.export_url  # noqa: B018 (checks the URL before anything is sent)
        auth = None
        if export.client_id is not None and export.private_key is not None:
            key = load_client_key(export.private_key, export.key_id)
            auth = BackendAuth(export.client_id, key, default_scope(request.types))
    except BulkExportError as exc:
        _fail(str(exc), 2)
    return request, auth


def _download(request: ExportRequest, auth: BackendAuth | None, folder: Path, quiet: bool) -> int:
    """Download the export into ``folder``; the number of files it held."""
    from plugin.audit.bulk import BulkClient, BulkExportError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"{folder}: cannot hold the export ({exc.strerror or type(exc).__name__})", 2)
    display = _ExportDisplay(Console(stderr=True, highlight=False), quiet)
    try:
        result = BulkClient(request, folder, auth, progress=display).run()
    except BulkExportError as exc:
        display.stop()
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        display.stop()
        _fail(f"interrupted; run the same command again to resume the export in {folder}", 130)
    display.stop()
    if not quiet:
        sys.stderr.write(
            f"therapy-cds audit: export of {len(result.files)} file(s) in {folder}"
            + (f" (as of {result.transaction_time})" if result.transaction_time else "")
            + ("; resumed" if result.resumed else "")
            + "\n"
        )
    return len(result.files)


class _ExportDisplay:
    """The export's progress: the server's status while it works, then bytes downloaded."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=32),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.wait_task: TaskID | None = None
        self.download_task: TaskID | None = None
        self.started = False

    def _start(self) -> None:
        if not self.started and not self.quiet:
            self.progress.start()
            self.started = True

    def waiting(self, status: str) -> None:
        self._start()
        description = f"Export running on the server: {status}"
        if self.wait_task is None:
            self.wait_task = self.progress.add_task(description, total=None)
        else:
            self.progress.update(self.wait_task, description=description)

    def downloading(self, files: int) -> None:
        self._start()
        if self.wait_task is not None:
            self.progress.remove_task(self.wait_task)
            self.wait_task = None
        if not self.quiet:
            self.progress.console.print("Export ready on the server")
        self.download_task = self.progress.add_task(f"Downloading {files} file(s)", total=None)

    def downloaded(self, done: int, total_known: int) -> None:
        if self.download_task is not None:
            self.progress.update(
                self.download_task, completed=done, total=max(total_known, done) or None
            )

    def stop(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False
