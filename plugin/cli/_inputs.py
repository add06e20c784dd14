"""The ``--max-file-size`` option every command that reads input files takes (check, audit,
invoke): the cap on one input file, decompressed size for gzip (see
:func:`fhir_mappings.open_input`). Without the option the setting
``THERAPY_CDS_MAX_FILE_SIZE`` decides (:class:`plugin.settings.Settings`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ByteSize, TypeAdapter, ValidationError

from fhir_mappings import DEFAULT_MAX_FILE_BYTES
from fhir_mappings.loader import format_size

if TYPE_CHECKING:
    from plugin.rules.cms_data import RuleTables
    from plugin.settings import Settings

_SIZE = TypeAdapter(ByteSize)


def cli_settings(command: str) -> Settings:
    """The settings a file-reading command goes by (development mode: no server settings are
    needed); a bad one is one line per error on stderr and exit 2, never a traceback."""
    from plugin.settings import Settings

    try:
        return Settings(dev_mode=True)
    except ValidationError as exc:
        for error in exc.errors():
            typer.echo(f"therapy-cds {command}: configuration error: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def parse_size(text: str) -> int:
    """``"5GB"`` / ``"300MB"`` / ``"512MiB"`` / ``"1000000"`` -> bytes (more than 0)."""
    try:
        size = int(_SIZE.validate_python(text.strip()))
    except ValidationError:
        raise typer.BadParameter(
            f"{text!r} is not a size; write it like 300MB, 5GB or 512MiB"
        ) from None
    if size <= 0:
        raise typer.BadParameter("must be more than 0")
    return size


# The option as a parameter type: ``max_file_size: MaxFileSize = None``.
MaxFileSize = Annotated[
    int | None,
    typer.Option(
        "--max-file-size",
        parser=parse_size,
        metavar="SIZE",
        help="Largest input file to read, decompressed (300MB, 5GB ...); default "
        f"THERAPY_CDS_MAX_FILE_SIZE, else {format_size(DEFAULT_MAX_FILE_BYTES)}.",
    ),
]


def max_file_bytes(option: int | None, settings: Settings) -> int:
    """The cap for this run: the option if given, else the setting."""
    return option if option is not None else int(settings.max_file_size)


# ``--ptp-file`` / ``--mue-file`` (check, audit, data): CMS quarterly files, repeatable; given,
# they replace THERAPY_CDS_PTP_FILES / THERAPY_CDS_MUE_FILES for the run.
PtpFiles = Annotated[
    list[str] | None,
    typer.Option(
        "--ptp-file",
        metavar="FILE[@YYYY-MM-DD]",
        help="CMS Practitioner PTP edit file (tab-delimited text or the spreadsheet saved as "
        "CSV); repeat for several quarters. Default THERAPY_CDS_PTP_FILES, else the built-in "
        "rule-book excerpt.",
    ),
]
MueFiles = Annotated[
    list[str] | None,
    typer.Option(
        "--mue-file",
        metavar="FILE[@YYYY-MM-DD]",
        help="CMS Practitioner Services MUE table (CSV or tab-delimited); repeat for several "
        "quarters. Default THERAPY_CDS_MUE_FILES; none: E-MUE-EXCEEDED is not checked.",
    ),
]


def rule_tables(
    ptp_files: list[str] | None, mue_files: list[str] | None, settings: Settings, command: str
) -> RuleTables:
    """Load the run's CMS tables (the options, else the settings); an unusable file ends the
    command with one line on stderr (exit 2), nothing half-loaded."""
    from plugin.rules.cms_data import CmsFileError, tables_from

    try:
        return tables_from(
            ptp_files if ptp_files else settings.ptp_files,
            mue_files if mue_files else settings.mue_files,
        )
    except CmsFileError as exc:
        sys.stderr.write(f"therapy-cds {command}: {exc}\n")
        raise typer.Exit(2) from None
