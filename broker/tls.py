"""A development CA and a server certificate for the broker's TLS listener (``openssl``).

For development and CI only: production uses a certificate from a real CA
(README, "Broker security"), whose clients then need no ``cafile``.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_DAYS = 3650
# Browsers and some TLS stacks refuse server certificates valid longer than 825 days.
SERVER_DAYS = 825
CURVE = "prime256v1"


class TlsError(RuntimeError):
    """openssl is missing or failed; the message carries its output."""


@dataclass(frozen=True, slots=True)
class DevCertificates:
    """The files of a development CA and the broker certificate it signed."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate clients trust (``cafile``)."""
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's private key: keep it to sign again, never give it out."""
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The broker's certificate (``certfile``)."""
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        """The broker's private key (``keyfile``)."""
        return self.directory / "server.key"

    def listener_lines(self, port: int, bind: str | None = None) -> list[str]:
        """Mosquitto options for a TLS listener on ``port`` with these files."""
        return [
            f"listener {port}{f' {bind}' if bind else ''}",
            f"cafile {self.ca_cert}",
            f"certfile {self.server_cert}",
            f"keyfile {self.server_key}",
        ]


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise TlsError("openssl not found (Debian package openssl)")
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode:
        raise TlsError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _subject_alt_names(hosts: list[str]) -> str:
    names = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            names.append(f"DNS:{host}")
        else:
            names.append(f"IP:{host}")
    return ",".join(names)


def make_dev_ca(directory: Path, hosts: list[str]) -> DevCertificates:
    """Create a CA (kept if it exists) and a server certificate for ``hosts`` (names or IPs)."""
    certs = DevCertificates(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not certs.ca_cert.exists():
        _openssl(
            *("req", "-x509", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}"),
            *("-nodes", "-keyout", str(certs.ca_key), "-out", str(certs.ca_cert)),
            *("-days", str(CA_DAYS), "-subj", "/CN=gridwatch development CA"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        )
    request = directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text(
        f"subjectAltName={_subject_alt_names(hosts)}\n"
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        encoding="utf-8",
    )
    _openssl(
        *("req", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}", "-nodes"),
        *("-keyout", str(certs.server_key), "-out", str(request), "-subj", f"/CN={hosts[0]}"),
    )
    _openssl(
        *("x509", "-req", "-in", str(request), "-CA", str(certs.ca_cert)),
        *("-CAkey", str(certs.ca_key), "-CAcreateserial", "-out", str(certs.server_cert)),
        *("-days", str(SERVER_DAYS), "-extfile", str(extensions)),
    )
    request.unlink()
    extensions.unlink()
    for key in (certs.ca_key, certs.server_key):
        key.chmod(0o640)
    return certs
