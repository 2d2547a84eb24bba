"""This machine's device id and platform, as the SDK sends them when not given.

The device id must stay the same across runs of the product on one machine (the
server counts devices per user and product, RULES M8), and should say nothing
about the machine: it is a hash of the OS's machine id (``/etc/machine-id`` or
the D-Bus one on Linux and BSD, the registry's ``MachineGuid`` on Windows), or,
where there is none (macOS, containers without one), of the host name and a MAC
address. Products that know better pass their own ``device_id``.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import uuid
from pathlib import Path

from client_sdk.models import Platform

_NAMESPACE = b"tessera-device-v1\x00"
_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def _linux_machine_id() -> str | None:
    for name in _MACHINE_ID_FILES:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def _windows_machine_guid() -> str | None:  # pragma: no cover - Windows only
    if sys.platform == "win32":
        import winreg

        try:
            with winreg.OpenKey(
                winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography"
            ) as key:
                value, _ = winreg.QueryValueEx(key, "MachineGuid")
                return str(value)
        except OSError:
            return None
    return None


def machine_identity() -> str:
    """The raw, private identity of this machine that the device id is hashed from."""
    found: str | None
    found = _windows_machine_guid() if sys.platform == "win32" else _linux_machine_id()
    if found:
        return found
    return f"{socket.gethostname()}|{uuid.getnode():012x}"


def device_id_for(identity: str) -> str:
    """A stable, opaque device id for a machine identity: ``dev-`` and 32 hex digits."""
    digest = hashlib.sha256(_NAMESPACE + identity.encode()).hexdigest()
    return f"dev-{digest[:32]}"


def default_device_id() -> str:
    """This machine's device id (the same on every call and every run)."""
    return device_id_for(machine_identity())


def default_platform() -> Platform:
    if sys.platform.startswith("win"):
        return Platform.WINDOWS
    if sys.platform == "darwin":
        return Platform.MACOS
    return Platform.LINUX
