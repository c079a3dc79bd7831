"""TLS for the wire protocol: contexts, certificate pinning, test certificates.

The server presents a certificate; the client verifies it against a CA file
(``--tls-ca``) or a pinned SHA-256 fingerprint of the server certificate
(``--tls-pin``). With TLS the token never crosses the network in clear.
``python -m fl certs`` makes a small CA and a server certificate for a
private federation (cryptography library).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import socket
import ssl
from pathlib import Path


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """TLS 1.2+ server context; raises OSError/ssl.SSLError for unreadable files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def client_context(cafile: str | None = None, pin_sha256: str | None = None) -> ssl.SSLContext:
    """Verify the server against a CA file, or (pinning) accept exactly one certificate.

    With a pin, chain and hostname checks are replaced by comparing the
    certificate's SHA-256 fingerprint after the handshake (check_pin).
    """
    if pin_sha256:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def normalise_pin(pin: str) -> str:
    return pin.replace(":", "").strip().lower()


def check_pin(sock: ssl.SSLSocket, pin_sha256: str) -> None:
    """Raise ssl.SSLError unless the peer certificate has the pinned fingerprint."""
    der = sock.getpeercert(binary_form=True) or b""
    if not hmac.compare_digest(fingerprint(der), normalise_pin(pin_sha256)):
        raise ssl.SSLError("server certificate does not match the pinned SHA-256 fingerprint")


def make_certificates(out_dir: str | Path, hosts: list[str], days: int = 365) -> dict[str, str]:
    """A CA and a server certificate for ``hosts`` (names or IPs); returns the file paths and the pin."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fl workbench CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = {"ca": out / "ca.pem", "cert": out / "server.pem", "key": out / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(pem))
    paths["cert"].write_bytes(cert.public_bytes(pem))
    paths["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    result = {k: str(v) for k, v in paths.items()}
    result["pin"] = fingerprint(cert.public_bytes(serialization.Encoding.DER))
    return result


def default_hosts() -> list[str]:
    return ["localhost", "127.0.0.1", socket.gethostname()]
