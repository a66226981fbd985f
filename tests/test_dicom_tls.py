"""DICOM TLS: a hub with a certificate and client-certificate verification on, spoken to by
DCMTK (built with OpenSSL) and by our own SCU; plain TCP and unknown clients are refused."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicom.tls import client_context
from tests.helpers import DCMTK_ENV, Hub, dcmtk_tool, fresh_copy, start_hub
from tests.test_dicom_conformance import stored_instance


# ----- a small PKI ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # signed by a CA the hub does not trust
    rogue_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """A consortium CA, the hub's server certificate, a clinic's client certificate, and a
    client certificate from an unrelated CA."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("telehub test CA", ca_key, ca=True)
    ca_path, _ = _write(folder, "ca", ca_cert, ca_key)
    issued = {}
    for stem, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(stem, key, ca_cert.subject, ca_key, server=server)
        issued[stem] = _write(folder, stem, cert, key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _certificate("someone else's CA", other_key, ca=True)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _certificate("rogue", rogue_key, other_ca.subject, other_key)
    rogue_paths = _write(folder, "rogue", rogue, rogue_key)
    return Pki(ca_path, *issued["server"], *issued["client"], *rogue_paths)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Hub]:
    hub = start_hub(
        tmp_path_factory.mktemp("tls"),
        {
            "TELEHUB_DICOM_TLS_CERT": str(pki.server_cert),
            "TELEHUB_DICOM_TLS_KEY": str(pki.server_key),
            "TELEHUB_DICOM_TLS_CA": str(pki.ca),
        },
        name="tls-hub",
    )
    yield hub
    hub.proc.stop()


# ----- helpers -------------------------------------------------------------------------------
def echo(hub: Hub, tls: ssl.SSLContext | None) -> bool:
    ae = AE("CLINIC1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 10
    assoc = ae.associate(
        "127.0.0.1",
        hub.dicom_port,
        ae_title="TELEHUB",
        tls_args=(tls, "127.0.0.1") if tls is not None else None,
    )
    if not assoc.is_established:
        return False
    try:
        return assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def dcmtk_tls(tool: str, pki: Pki, hub: Hub, *args: str, cert: str = "client") -> str:
    """Run a DCMTK tool over TLS with our CA and a client certificate; returns its output and
    fails the test unless it exits 0 (callers that expect failure catch that)."""
    key, crt = getattr(pki, f"{cert}_key"), getattr(pki, f"{cert}_cert")
    run = subprocess.run(
        [dcmtk_tool(tool), "-v", "+tls", str(key), str(crt), "+cf", str(pki.ca)]
        + ["-aet", "CLINIC1", "-aec", "TELEHUB", *args, "127.0.0.1", str(hub.dicom_port)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if run.returncode != 0:
        raise AssertionError(f"{tool} exited {run.returncode}: {run.stdout}{run.stderr}")
    return run.stdout + run.stderr


# ----- tests ---------------------------------------------------------------------------------
def test_dcmtk_echoscu_over_tls(tls_hub: Hub, pki: Pki, dcmtk: None) -> None:
    out = dcmtk_tls("echoscu", pki, tls_hub)
    assert "Received Echo Response (Success)" in out


def test_dcmtk_storescu_over_tls_stores(
    tls_hub: Hub,
    pki: Pki,
    dcmtk: None,
    tmp_path: Path,
) -> None:
    path = fresh_copy("CT_small.dcm", tmp_path)
    run = subprocess.run(
        [dcmtk_tool("storescu"), "-v", "+tls", str(pki.client_key), str(pki.client_cert)]
        + ["+cf", str(pki.ca), "-aet", "CLINIC1", "-aec", "TELEHUB", "-R", "-xe"]
        + ["127.0.0.1", str(tls_hub.dicom_port), str(path)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    row, stored = stored_instance(tls_hub, pydicom.dcmread(path).SOPInstanceUID)
    assert row is not None and stored is not None


def test_telehub_send_over_tls(tls_hub: Hub, pki: Pki, tmp_path: Path) -> None:
    path = fresh_copy("MR_small.dcm", tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "telehub", "send", "--quiet", "--aet", "CLINIC1"]
        + ["--port", str(tls_hub.dicom_port), "--tls-ca", str(pki.ca)]
        + ["--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key), str(path)],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sent 1 instance(s)" in run.stdout
    row, _ = stored_instance(tls_hub, pydicom.dcmread(path).SOPInstanceUID)
    assert row is not None


def test_plain_tcp_to_the_tls_port_fails_cleanly_and_the_hub_keeps_serving(
    tls_hub: Hub, pki: Pki
) -> None:
    assert echo(tls_hub, None) is False
    assert echo(tls_hub, client_context(pki.ca, pki.client_cert, pki.client_key)) is True


def test_client_without_a_trusted_certificate_is_refused(
    tls_hub: Hub,
    pki: Pki,
    dcmtk: None,
) -> None:
    assert echo(tls_hub, client_context(pki.ca)) is False  # no certificate at all
    assert echo(tls_hub, client_context(pki.ca, pki.rogue_cert, pki.rogue_key)) is False
    with pytest.raises(AssertionError, match="exited"):
        dcmtk_tls("echoscu", pki, tls_hub, cert="rogue")
    # and a client that does not trust the hub's certificate gives up on its side
    assert echo(tls_hub, client_context(None, pki.client_cert, pki.client_key)) is False
    assert echo(tls_hub, client_context(pki.ca, pki.client_cert, pki.client_key)) is True
