"""Why a URL cannot be reached, found step by step (DNS, TCP, TLS certificate): what `doctor`
says when a request to the POS API or the cloud fails."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit


def probe(url: str, ca_bundle: Path | None) -> str | None:
    """Why a URL cannot be reached, found step by step: DNS, TCP, TLS certificate."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, ValueError):
        return "DNS: the host name does not resolve"
    family, kind, proto, _, address = addresses[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(3.0)
            sock.connect(address)
            if parts.scheme != "https":
                return None
            context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
            with context.wrap_socket(sock, server_hostname=host):
                return None
    except ConnectionRefusedError:
        return "connection refused (nothing listens at that host and port)"
    except TimeoutError:
        return "timed out (a firewall, or the host is down)"
    except ssl.SSLCertVerificationError as exc:
        return f"TLS certificate not accepted ({exc.verify_message})"
    except (ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
