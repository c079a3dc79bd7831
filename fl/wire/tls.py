"""TLS for the wire protocol: contexts, certificate pinning, test certificates.

The server presents a certificate; the client verifies it against a CA file
(``--tls-ca``) or a pinned SHA-256 fingerprint of the server certificate
(``--tls-pin``). With TLS the token never crosses the network in clear.
Optionally (mutual TLS) the server also demands a client certificate signed
by a CA of its own choosing (``--tls-client-ca``), so a peer without one never
even reaches the ``hello``. ``python -m fl certs`` makes a small CA, a server
certificate and client certificates for a private federation (cryptography
library).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import re
import socket
import ssl
from pathlib import Path
from typing import Any, Sequence


def server_context(certfile: str, keyfile: str, client_cafile: str | None = None) -> ssl.SSLContext:
    """TLS 1.2+ server context; raises OSError/ssl.SSLError for unreadable files.

    With ``client_cafile`` (mutual TLS) every client must present a
    certificate signed by that CA, or the TLS handshake fails.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    if client_cafile:
        ctx.load_verify_locations(cafile=client_cafile)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cafile: str | None = None, pin_sha256: str | None = None, certfile: str | None = None,
                   keyfile: str | None = None) -> ssl.SSLContext:
    """Verify the server against a CA file, or (pinning) accept exactly one certificate.

    With a pin, chain and hostname checks are replaced by comparing the
    certificate's SHA-256 fingerprint after the handshake (check_pin).
    ``certfile``/``keyfile``: this client's own certificate, for a server
    that requires one (mutual TLS).
    """
    if pin_sha256:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def refusal_reason(exc: BaseException) -> str | None:
    """Why a server-side TLS handshake failed, in words; None when the peer merely went away or timed out.

    The server reports these as REFUSED events with code ``tls``; a peer that
    hangs up or stays silent is not worth an event (an idle flood would fill
    the log).
    """
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        detail = getattr(exc, "verify_message", None) or "not signed by the CA in --tls-client-ca"
        return f"the client's certificate was not accepted ({detail}): it must be signed by the CA in --tls-client-ca"
    if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text:
        return "the client sent no certificate: this server requires one signed by the CA in --tls-client-ca"
    if "ALERT_UNKNOWN_CA" in text or "ALERT_BAD_CERTIFICATE" in text or "ALERT_CERTIFICATE_UNKNOWN" in text:
        return "the client does not trust this server's certificate (its --tls-ca or --tls-pin is another one)"
    if any(mark in text for mark in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNEXPECTED_RECORD", "record layer",
                                     "packet length too long", "UNSUPPORTED_PROTOCOL", "NO_SHARED_CIPHER",
                                     "VERSION_TOO_LOW")):
        return f"the peer does not speak TLS 1.2+ (a plain TCP client on the TLS port?): {getattr(exc, 'reason', text)}"
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return f"TLS handshake failed ({getattr(exc, 'reason', None) or text})"
    return None


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def normalise_pin(pin: str) -> str:
    return pin.replace(":", "").strip().lower()


def check_pin(sock: ssl.SSLSocket, pin_sha256: str) -> None:
    """Raise ssl.SSLError unless the peer certificate has the pinned fingerprint."""
    der = sock.getpeercert(binary_form=True) or b""
    if not hmac.compare_digest(fingerprint(der), normalise_pin(pin_sha256)):
        raise ssl.SSLError("server certificate does not match the pinned SHA-256 fingerprint")


CLIENT_NAME = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")  # it becomes a file name: client-NAME.pem


def peer_names(cert: dict | None) -> tuple[str, ...]:
    """The names a verified peer certificate (``SSLObject.getpeercert()``) was issued to: its subject's common
    name(s), then its DNS subject alternative names; () without a certificate.

    A client certificate of ``python -m fl certs --client NAME`` has the
    common name NAME (and no alternative names); a certificate from another
    CA may name its holder in either place. Under mutual TLS the server lets
    a client join only under one of these names (fl/federation/identity.py).
    """
    if not cert:
        return ()
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for key, value in cert.get("subjectAltName", ()) if key == "DNS"]
    return tuple(dict.fromkeys(names))


def certificate_names(certfile: str) -> tuple[str, ...]:
    """The names a PEM certificate file was issued to, as ``peer_names`` reads them on the server (common
    name(s), then DNS alternative names); ValueError for a file that holds no PEM certificate. A client with a
    certificate joins under the first by default (``python -m fl client --tls-client-cert``)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(Path(certfile).read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {certfile} ({exc.strerror or exc})") from None
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        names += cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        pass
    return tuple(dict.fromkeys(names))


def make_certificates(out_dir: str | Path, hosts: list[str], days: int = 365,
                      clients: Sequence[str] = ()) -> dict[str, str]:
    """A CA, a server certificate for ``hosts`` (names or IPs) and one client certificate per name in ``clients``.

    Returns the file paths (``ca``, ``ca_key``, ``cert``, ``key``, ``client:NAME``
    and ``client_key:NAME``) and the server certificate's ``pin``. The CA's key
    is kept (``ca.key``, mode 0600) so that more clients can be issued later
    with the same CA (``issue_client_certificates``); it never needs to leave
    this machine. The server certificate is for server authentication only and
    a client certificate for client authentication only, so neither can stand
    in for the other.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    check_client_names(clients)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fl workbench CA")
    ca_cert = _sign(_builder(ca_name, ca_name, ca_key.public_key(), days)
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True), ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = _sign(_builder(_name(hosts[0]), ca_name, key.public_key(), days)
                 .add_extension(x509.SubjectAlternativeName(names), critical=False)
                 .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False), ca_key)
    paths = {"ca": out / "ca.pem", "ca_key": out / "ca.key", "cert": out / "server.pem", "key": out / "server.key"}
    _write_cert(paths["ca"], ca_cert)
    _write_key(paths["ca_key"], ca_key)
    _write_cert(paths["cert"], cert)
    _write_key(paths["key"], key)
    result = {k: str(v) for k, v in paths.items()}
    result["pin"] = fingerprint(_der(cert))
    result.update(issue_client_certificates(out, clients, days, ca=(ca_key, ca_cert)))
    return result


def issue_client_certificates(out_dir: str | Path, clients: Sequence[str], days: int = 365,
                              ca: tuple[Any, Any] | None = None) -> dict[str, str]:
    """``client-NAME.pem`` and ``client-NAME.key`` for each name, signed by the CA of ``out_dir`` (or ``ca``).

    Raises ValueError, in words, for a name that cannot be a file name or a
    directory without the CA's certificate and key (ca.pem, ca.key).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    check_client_names(clients)
    out = Path(out_dir)
    if not clients:
        return {}
    ca_key, ca_cert = ca if ca is not None else load_ca(out)
    result: dict[str, str] = {}
    for name in clients:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(_builder(_name(name), ca_cert.subject, key.public_key(), days)
                     .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                     .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False),
                     ca_key)
        cert_path, key_path = out / f"client-{name}.pem", out / f"client-{name}.key"
        _write_cert(cert_path, cert)
        _write_key(key_path, key)
        result[f"client:{name}"], result[f"client_key:{name}"] = str(cert_path), str(key_path)
    return result


def check_client_names(clients: Sequence[str]) -> None:
    """ValueError, in words, unless every name can be a file name and none is given twice."""
    for name in clients:
        if not CLIENT_NAME.fullmatch(name):
            raise ValueError(f"client name {name!r} must be 1-64 chars of A-Z a-z 0-9 _ . - (not starting with . or -)")
    if len(set(clients)) != len(clients):
        raise ValueError("each client name may be given once")


def load_ca(out_dir: str | Path) -> tuple[Any, Any]:
    """The (key, certificate) of the CA kept in ``out_dir``; ValueError in words when it is missing or unreadable."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    out = Path(out_dir)
    cert_path, key_path = out / "ca.pem", out / "ca.key"
    if not cert_path.is_file() or not key_path.is_file():
        raise ValueError(f"{out} holds no CA to sign with (ca.pem and ca.key)")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot read the CA in {out} ({exc})") from None
    return key, cert


def has_ca(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a CA that can sign more certificates."""
    return (Path(out_dir) / "ca.pem").is_file() and (Path(out_dir) / "ca.key").is_file()


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: Any, issuer: Any, public_key: Any, days: int) -> Any:
    from cryptography import x509

    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days)))


def _sign(builder: Any, key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    return builder.sign(key, hashes.SHA256())


def _der(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def _write_cert(path: Path, cert: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: Any) -> None:
    """A private key, readable by its owner only (created so: never world-readable, not even for a moment)."""
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)


def default_hosts() -> list[str]:
    return ["localhost", "127.0.0.1", socket.gethostname()]
