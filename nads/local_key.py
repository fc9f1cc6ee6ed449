"""The key `nads serve` keeps for its local user, read by the client for a local service.

`nads serve` writes it (0600) to `$NADS_DATA_DIR/local-api-key` (default `./var`), and prints
it; the client sends it when no key is given (no `key`, `--key` or `$NADS_KEY`) and the service's
URL is a loopback address. It never reads it for any other URL: the key would leave the
machine.

In a directory other local users can write to (a shared checkout's ./var), the file is trusted
only when it is this user's and no one else can write it: a key planted by another user would
send this user's uploads and jobs into the planter's account. It is written through a new 0600
file renamed into place, so a planted file or symlink at its name is replaced, never written
through, and the key is never readable by others, not even for an instant.

Before the key is sent, the service proves it holds it (`prove` / `check_proof`): whatever
listens on a loopback port may be another local user's program (the port of a `nads serve` that
is down is free to take), which would collect the key from the first request. The client sends a
random challenge to `GET /v1/local-proof` without a key; `nads serve` answers with the HMAC of the
challenge under the key, which only the holder of the key can compute; no answer, or a wrong
one, and the key is not sent.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

LOCAL_KEY_FILE = "local-api-key"
PROOF_PATH = "/v1/local-proof"  # served by `nads serve` only (api/routers/health.py)
_PROOF_CONTEXT = b"nads local key proof\n"
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


def read_key_file(path: Path) -> str | None:
    """The key in `path` if the file is this user's own and writable by no one else (not a
    symlink); None otherwise, or when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as file:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            return None
        try:
            key = file.read(1024).strip()
        except (OSError, UnicodeDecodeError):
            return None
    return key or None


def write_key_file(path: Path, key: str) -> None:
    """Writes `key` to `path` (mode 0600) through a new file renamed over whatever is there."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(key + "\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def local_key(url: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The local key for a loopback `url`; None for any other URL, or when there is none
    (or the file is not this user's own: read_key_file)."""
    if not is_local(url):
        return None
    return read_key_file(local_key_path(environ))


def new_challenge() -> str:
    return secrets.token_hex(32)


def prove(key: str, challenge: str) -> str:
    """The answer to `challenge` of the holder of `key` (hex HMAC-SHA256)."""
    return hmac.new(key.encode(), _PROOF_CONTEXT + challenge.encode(), hashlib.sha256).hexdigest()


def check_proof(key: str, challenge: str, answer: object) -> bool:
    return isinstance(answer, str) and hmac.compare_digest(prove(key, challenge), answer)
