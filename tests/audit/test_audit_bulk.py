"""``therapy-cds audit --fhir-export``: a real loopback Bulk Data server (bench/fake_bulk_server.py)
with SMART Backend Services; the audit from the server equals the audit of the same files
read locally; every failure mode ends in a clear line or is recovered from."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from audit_support import bench_script, comparable_report, generate, run_cli
from joserfc.jwk import ECKey, RSAKey, import_key

from plugin.audit.bulk import (
    EXPORT_TYPES,
    STATE_FILE,
    BackendAuth,
    BulkClient,
    BulkExportError,
    ExportRequest,
    default_scope,
    load_client_key,
    parse_since,
    retry_after,
)

CLIENT = "therapy-cds-audit-test"


fake = bench_script("fake_bulk_server.py")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(150, tmp_path_factory.mktemp("gen"), seed=5)[0]


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    key = RSAKey.generate_key(2048)
    path = tmp_path_factory.mktemp("keys") / "client.pem"
    path.write_bytes(key.as_pem(private=True))
    return path, import_key(key.as_dict(private=False))


@pytest.fixture(scope="module")
def ec_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    key = ECKey.generate_key("P-384")
    path = tmp_path_factory.mktemp("keys") / "client.jwk"
    path.write_text(json.dumps(key.as_dict(private=True)))
    return path, import_key(key.as_dict(private=False))


def _server(export: Path, public: Any, **behaviour: Any) -> Any:
    return fake.FakeBulkServer(export, CLIENT, public, fake.Behaviour(**behaviour))


def _audit_from(
    server: Any, key: Path, out: Path, *extra: str, url: str | None = None, quiet: bool = True
) -> Any:
    return run_cli(
        "audit",
        "--fhir-export",
        url or server.base,
        "--client-id",
        CLIENT,
        "--private-key",
        str(key),
        "--out",
        str(out),
        "--jobs",
        "1",
        *(["--quiet"] if quiet else []),
        *extra,
    )


def _same_audit(remote_out: Path, local_out: Path) -> None:
    """Byte for byte, except the run's own line (start time, seconds) and summary ``run``."""
    for name in ("visits.csv", "findings.csv", "rejected.csv"):
        assert (remote_out / name).read_bytes() == (local_out / name).read_bytes(), name
    remote = json.loads((remote_out / "summary.json").read_text())
    local = json.loads((local_out / "summary.json").read_text())
    assert remote.pop("run").keys() == local.pop("run").keys()
    assert remote == local
    assert comparable_report((remote_out / "report.html").read_text()) == comparable_report(
        (local_out / "report.html").read_text()
    )


def _served_files(export: Path) -> dict[str, bytes]:
    wanted = set(EXPORT_TYPES) | {"OperationOutcome"}
    return {p.stem: p.read_bytes() for p in export.glob("*.ndjson") if p.stem in wanted}


def _downloaded(folder: Path) -> dict[str, bytes]:
    found = {}
    for path in folder.glob("*.ndjson"):
        kind = path.name.split(".")[0].removeprefix("error-")
        found[kind] = path.read_bytes()
    return found


# ------------------------------------------------------------------------- end to end


def test_the_audit_from_the_server_is_the_audit_of_the_same_files(
    export: Path, rsa_key: tuple[Path, Any], tmp_path: Path
) -> None:
    key, public = rsa_key
    with _server(
        export, public, in_progress_polls=2, expire_first_token=True, drop_file="Procedure"
    ) as server:
        result = _audit_from(server, key, tmp_path / "remote")
        assert result.exit_code == 0, result.output
        record = server.record
    folder = tmp_path / "remote" / "fhir-export"
    # what was asked: the mapped types and parties only, system level, async
    assert record.kickoffs == [{"level": "system", "types": sorted(EXPORT_TYPES), "since": None}]
    assert "Patient" not in EXPORT_TYPES
    assert {"Procedure", "Claim", "Encounter", "Practitioner"} <= set(EXPORT_TYPES)
    assert record.polls == 3  # two "in progress" answers, then the manifest
    # the first token was refused once it had been used: a new one was fetched, nothing failed
    assert record.tokens_issued == 2
    assert record.unauthorized == 1
    # the file whose connection dropped was resumed where it stopped, the others fetched once
    assert record.range_requests == {"Procedure": 1}
    assert all(n == 1 for kind, n in record.file_requests.items() if kind != "Procedure")
    assert record.deletes == 1
    assert _downloaded(folder) == _served_files(export)
    assert json.loads((folder / STATE_FILE).read_text())["complete"] is True

    local = run_cli("audit", str(folder), "--out", str(tmp_path / "local"), "--jobs", "1", "-q")
    assert local.exit_code == 0, local.output
    _same_audit(tmp_path / "remote", tmp_path / "local")
    assert json.loads((tmp_path / "local" / "summary.json").read_text())["totals"]["visits"] > 0


@pytest.mark.parametrize("packing", ["encoding", "file"])
def test_group_level_since_gzip_and_an_http_date_retry_after(
    export: Path, ec_key: tuple[Path, Any], tmp_path: Path, packing: str
) -> None:
    key, public = ec_key  # ES384 from a JWK
    with _server(export, public, retry_after="date", in_progress_polls=1, gzip=packing) as server:
        result = _audit_from(
            server,
            key,
            tmp_path / "out",
            "--since",
            "2025-01-31",
            url=f"{server.base}/Group/clinic-7/$export",
            quiet=packing == "encoding",
        )
        assert result.exit_code == 0, result.output
        if packing == "file":  # with the progress display
            served = len(_served_files(export))
            assert f"therapy-cds audit: export of {served} file(s) in " in result.stderr
        record = server.record
    assert record.kickoffs[0]["level"] == "Group/clinic-7"
    assert record.kickoffs[0]["since"] == "2025-01-31T00:00:00+00:00"
    assert _downloaded(tmp_path / "out" / "fhir-export") == _served_files(export)


def test_a_download_that_keeps_failing_resumes_on_the_next_run(
    export: Path, rsa_key: tuple[Path, Any], tmp_path: Path
) -> None:
    key, public = rsa_key
    out = tmp_path / "out"
    with _server(export, public, in_progress_polls=0, drop_file="Claim", drop_times=99) as server:
        first = _audit_from(server, key, out)
        assert first.exit_code == 1
        line = first.stderr.strip()
        assert line.startswith("therapy-cds audit: http://127.0.0.1:")
        assert "download failed 4 times" in line
        assert "run the same command again to resume it" in line
        assert "Traceback" not in first.output
        assert not (out / "summary.json").exists()
        partial = out / "fhir-export" / "Claim.001.ndjson.part"
        assert partial.stat().st_size > 0
        assert not (out / "fhir-export" / "Claim.001.ndjson").exists()

        server.behaviour.drop_times = 0  # the network is back
        second = _audit_from(server, key, out)
        assert second.exit_code == 0, second.output
        record = server.record
    assert len(record.kickoffs) == 1  # the export was not asked for again
    assert record.file_requests["Claim"] == 5  # 4 broken tries, then one resumed request
    assert record.range_requests["Claim"] == 4
    assert all(n == 1 for kind, n in record.file_requests.items() if kind != "Claim")
    assert _downloaded(out / "fhir-export") == _served_files(export)
    assert not partial.exists()


def test_an_export_interrupted_while_the_server_works_is_polled_again_not_restarted(
    export: Path, rsa_key: tuple[Path, Any], tmp_path: Path
) -> None:
    key, public = rsa_key
    folder = tmp_path / "export"

    async def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt  # Ctrl-C during the first wait

    with _server(export, public, in_progress_polls=2) as server:
        request = ExportRequest(f"{server.base}/Patient")
        auth = BackendAuth(CLIENT, load_client_key(key), default_scope(request.types))
        with pytest.raises(KeyboardInterrupt):
            BulkClient(request, folder, auth, sleep=interrupted).run()
        assert server.record.polls == 1
        result = BulkClient(request, folder, auth).run()
        record = server.record
    assert result.resumed
    assert record.kickoffs == [{"level": "Patient", "types": sorted(EXPORT_TYPES), "since": None}]
    assert record.polls == 3
    assert {p.name.split(".")[0] for p in result.files} >= {"Procedure", "Claim"}
    assert _downloaded(folder) == _served_files(export)


def test_a_finished_export_is_replaced_by_a_new_one_on_the_next_run(
    export: Path, rsa_key: tuple[Path, Any], tmp_path: Path
) -> None:
    key, public = rsa_key
    with _server(export, public, in_progress_polls=0) as server:
        assert _audit_from(server, key, tmp_path / "out").exit_code == 0
        again = _audit_from(server, key, tmp_path / "out", "--since", "2024-06-01T00:00:00Z")
        assert again.exit_code == 0, again.output
        kickoffs = server.record.kickoffs
    assert [k["since"] for k in kickoffs] == [None, "2024-06-01T00:00:00+00:00"]
    assert _downloaded(tmp_path / "out" / "fhir-export") == _served_files(export)


def test_a_token_is_fetched_again_before_it_expires(
    export: Path, rsa_key: tuple[Path, Any], tmp_path: Path
) -> None:
    key, public = rsa_key
    with _server(export, public, in_progress_polls=3, token_seconds=2) as server:
        result = _audit_from(server, key, tmp_path / "out")
        assert result.exit_code == 0, result.output
        record = server.record
    assert record.tokens_issued >= 2  # three 1-second waits outlive a 2-second token
    assert record.unauthorized == 0  # replaced before the server had to refuse it


def test_a_server_that_ignores_ranges_and_one_that_is_busy(
    export: Path, rsa_key: tuple[Path, Any], tmp_path: Path
) -> None:
    key, public = rsa_key
    with _server(
        export, public, in_progress_polls=0, drop_file="Encounter", ranges=False, busy_files=2
    ) as server:
        result = _audit_from(server, key, tmp_path / "out")
        assert result.exit_code == 0, result.output
        record = server.record
    assert record.range_requests["Encounter"] == 1  # asked to resume, got the whole file
    assert record.busy == 2
    assert sum(record.file_requests.values()) == len(_served_files(export)) + 1
    assert _downloaded(tmp_path / "out" / "fhir-export") == _served_files(export)


def test_the_token_is_not_sent_to_another_host(
    export: Path, rsa_key: tuple[Path, Any], tmp_path: Path
) -> None:
    key, public = rsa_key
    with _server(export, public, in_progress_polls=0, file_host="localhost") as server:
        result = _audit_from(server, key, tmp_path / "out")
        record = server.record
    assert result.exit_code == 1
    assert "wants the access token sent to another host" in result.stderr
    assert sum(record.file_requests.values()) == 0


def test_an_empty_incremental_export_says_there_is_nothing_to_audit(
    rsa_key: tuple[Path, Any], tmp_path: Path
) -> None:
    key, public = rsa_key
    empty = tmp_path / "empty"
    empty.mkdir()
    with _server(empty, public, in_progress_polls=0) as server:
        result = _audit_from(server, key, tmp_path / "out", "--since", "2026-01-01")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "The export holds no files of the types the audit reads (nothing changed since "
        "--since); nothing to audit.\n"
    )
    assert not (tmp_path / "out" / "summary.json").exists()


# ------------------------------------------------------------------------ failure modes


def test_an_export_error_is_one_line_with_the_servers_diagnostics(
    export: Path, rsa_key: tuple[Path, Any], tmp_path: Path
) -> None:
    key, public = rsa_key
    with _server(export, public, in_progress_polls=1, fail_export=True) as server:
        result = _audit_from(server, key, tmp_path / "out")
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].endswith(
            "the export failed (HTTP 500: export failed: the database went away)"
        )
        assert "Traceback" not in result.output

        server.behaviour.fail_export = False
        again = _audit_from(server, key, tmp_path / "out")
        assert again.exit_code == 0, again.output
        assert len(server.record.kickoffs) == 2  # a failed export is asked for anew, not resumed


def test_a_key_the_ehr_does_not_know_is_refused_clearly(
    export: Path, rsa_key: tuple[Path, Any], ec_key: tuple[Path, Any], tmp_path: Path
) -> None:
    _, public = rsa_key
    with _server(export, public) as server:
        result = _audit_from(server, ec_key[0], tmp_path / "out")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "the token request was refused with HTTP 401 (invalid_client: bad signature)" in line
    assert "check --client-id, --private-key" in line


def test_without_credentials_a_protected_server_says_what_to_give(
    export: Path, rsa_key: tuple[Path, Any], tmp_path: Path
) -> None:
    with _server(export, rsa_key[1]) as server:
        result = run_cli(
            "audit", "--fhir-export", server.base, "--out", str(tmp_path / "out"), "-q"
        )
    assert result.exit_code == 1
    assert result.stderr.strip().endswith(
        "HTTP 401, the server needs authorization; give --client-id and --private-key"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fhir-export", "ftp://ehr/fhir"], "not an http(s) URL"),
        (["--fhir-export", "https://ehr/fhir?_type=Patient"], "without a query"),
        (["--fhir-export", "https://ehr/fhir", "--client-id", "x"], "go together"),
        (["--fhir-export", "https://ehr/fhir", "--since", "last week"], "not a date or instant"),
        ([], "give the files or folders to audit (PATH...), or --fhir-export URL"),
    ],
)
def test_unusable_export_arguments_are_usage_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("audit", *args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("therapy-cds audit: ")
    assert message in lines[0]


def test_a_key_file_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "key.pem"
    os.mkfifo(fifo)
    with pytest.raises(BulkExportError, match=r"^--private-key .*key\.pem"):
        load_client_key(fifo)


def test_an_ec_key_off_p384_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p256.pem"
    path.write_bytes(ECKey.generate_key("P-256").as_pem(private=True))
    with pytest.raises(BulkExportError, match="must be on curve P-384"):
        load_client_key(path)
    public_only = tmp_path / "public.jwk"
    public_only.write_text(json.dumps(ECKey.generate_key("P-384").as_dict(private=False)))
    with pytest.raises(BulkExportError, match="not a private EC or RSA key"):
        load_client_key(public_only)


# ---------------------------------------------------------------------------- pieces


def test_export_levels() -> None:
    system = ExportRequest("https://ehr.example/fhir/")
    assert system.export_url == "https://ehr.example/fhir/$export"
    assert (system.fhir_base, system.level) == ("https://ehr.example/fhir", "system")
    group = ExportRequest("https://ehr.example/fhir/Group/g-1/$export")
    assert group.export_url == "https://ehr.example/fhir/Group/g-1/$export"
    assert (group.fhir_base, group.level) == ("https://ehr.example/fhir", "Group/g-1")
    patient = ExportRequest("https://ehr.example/r4/Patient")
    assert (patient.fhir_base, patient.level) == ("https://ehr.example/r4", "Patient")
    assert patient.params() == {"_type": ",".join(EXPORT_TYPES)}


def test_retry_after_seconds_and_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after("7", now) == 7.0
    assert retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # in the past: now
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


def test_since_without_a_zone_is_utc() -> None:
    assert parse_since("2025-03-04T05:06:07").isoformat() == "2025-03-04T05:06:07+00:00"
    with pytest.raises(BulkExportError):
        parse_since("yesterday")
