"""Tasks: decode arguments, call one service, nothing else. Each is idempotent and retry-safe:
the service checks state before it changes it and marks its outbox row done in the same
transaction."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import IntegrityError, OperationalError

from telehub import ecgs, ingest, outbox, recovery, routing
from telehub.services import Services
from workers.app import app, settings

log = logging.getLogger(__name__)
_services: Services | None = None
_lock = threading.Lock()


def services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = Services.from_settings(settings())
        return _services


@app.task(
    name="telehub.route_case",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def route_case(case_id: int, outbox_id: int | None = None) -> None:
    svc = services()
    decision = routing.route_case(svc.db, case_id, outbox_id, settings=svc.settings)
    log.info("case %s: %s (centre %s)", case_id, decision.rule, decision.centre_id)


@app.task(
    name="telehub.complete_if_quiet",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def complete_if_quiet(
    study_uid: str, reason: str, quiet_seconds: float, outbox_id: int | None = None
) -> None:
    if ingest.complete_if_quiet(services().db, study_uid, reason, quiet_seconds, outbox_id):
        log.info("study %s complete after %g s quiet", study_uid, quiet_seconds)


@app.task(
    name="telehub.analyse_ecg",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def analyse_ecg(ecg_id: int, outbox_id: int | None = None) -> None:
    """Analyse outside any transaction (CPU work), then record the result once."""
    from ecg.analysis import analyse
    from ecg.storage import loads

    svc = services()
    key = ecgs.waveform_key(svc.db, ecg_id)
    if key is None:
        ecgs.record_analysis(svc.db, ecg_id, {}, False, outbox_id)  # gone: just finish the job
        return
    with svc.store.open(key) as fh:
        waveform = loads(fh.read())
    result = analyse(waveform)
    changed = ecgs.record_analysis(
        svc.db, ecg_id, result.to_dict(), bool(result.critical), outbox_id, svc.settings
    )
    log.info("ECG %s analysed (critical=%s, recorded=%s)", ecg_id, result.critical, changed)


@app.task(
    name="telehub.ecg_from_dicom",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def ecg_from_dicom(case_id: int, outbox_id: int | None = None) -> None:
    """Give the ECG waveform instances of a DICOM case the same representation and analysis as
    uploaded ECGs. Instances already extracted are skipped, so a rerun changes nothing."""
    import pydicom

    from ecg.formats.dicom_waveform import read_dicom_waveform
    from ecg.model import ECGError
    from ecg.storage import dumps

    svc = services()
    for sop_uid, key in ecgs.dicom_ecg_instances(svc.db, case_id):
        with svc.store.open(key) as fh:
            dataset = pydicom.dcmread(fh)
        try:
            ecg = read_dicom_waveform(dataset)
        except ECGError as exc:
            log.warning("case %s: ECG instance %s not readable as ECG: %s", case_id, sop_uid, exc)
            continue
        upload = ecgs.EcgUpload(
            source_format=ecg.source_format or "dicom-waveform",
            sampling_rate=ecg.sampling_rate,
            lead_names=list(ecg.lead_names),
            duration_s=round(ecg.duration, 3),
            acquired_at=ecg.acquired_at,
            sop_uid=sop_uid,
        )
        ecgs.add_dicom_ecg(svc.db, svc.store, case_id, key, upload, dumps(ecg))
    with svc.db.session() as session:
        outbox.mark_done(session, outbox_id)


@app.task(
    name="telehub.dicomweb_metadata",
    # IntegrityError: another worker built the same series at the same moment; the retry
    # finds it up to date and skips it.
    autoretry_for=(OperationalError, IntegrityError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def dicomweb_metadata(study_uid: str, outbox_id: int | None = None) -> None:
    """Build the DICOMweb metadata of the study's new or grown series once, so viewers never
    wait for it; series already up to date are skipped, so a rerun changes nothing."""
    from dicom.web import metadata

    svc = services()
    built = metadata.ensure_study(svc.db, svc.store, study_uid, outbox_id)
    log.info("study %s: DICOMweb metadata built for %s series", study_uid, built)


@app.task(name="telehub.recovery_sweep", autoretry_for=(OperationalError,), max_retries=3)
def recovery_sweep() -> None:
    """Complete studies whose receiver died before the transfer ended (idempotent)."""
    svc = services()
    for case_id in recovery.complete_abandoned_studies(
        svc.db, svc.settings.abandoned_study_seconds
    ):
        log.info("case %s complete after its receiver went away", case_id)


@app.task(name="telehub.orphan_sweep", autoretry_for=(OperationalError,), max_retries=3)
def orphan_sweep() -> None:
    """Remove objects no index row points at, and this worker's stale spool temporaries."""
    svc = services()
    recovery.sweep_orphans(svc.db, svc.store, svc.settings.orphan_grace_seconds)
    recovery.sweep_spool_temp(svc.settings.spool, svc.settings.orphan_grace_seconds)
