"""The key `nads serve` keeps for its local user, read by the client for a local service.

`nads serve` writes it (0600) to `$NADS_DATA_DIR/local-api-key` (default `./var`), and prints
it; the client sends it when no key is given (no `key`, `--key` or `$NADS_KEY`) and the service's
URL is a loopback address. It never reads it for any other URL: the key would leave the
machine.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

LOCAL_KEY_FILE = "local-api-key"
DEFAULT_DATA_DIR = "var"  # as store.settings.Settings.data_dir


def local_key_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where `nads serve` (run with this environment, in this directory) keeps its key."""
    return Path(environ.get("NADS_DATA_DIR") or DEFAULT_DATA_DIR) / LOCAL_KEY_FILE


def is_local(url: str) -> bool:
    """True for http(s) URLs whose host is `localhost` or a loopback address."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_key(url: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The local key for a loopback `url`; None for any other URL, or when there is none."""
    if not is_local(url):
        return None
    try:
        key = local_key_path(environ).read_text().strip()
    except OSError:
        return None
    return key or None
