"""This machine's device id and platform, as the SDK sends them when not given.

The device id must stay the same across runs of the product on one machine (the
server counts devices per user and product, RULES M8), and should say nothing
about the machine: it is a hash of the OS's machine id (``/etc/machine-id`` or
the D-Bus one on Linux and BSD, the registry's ``MachineGuid`` on Windows, the
hardware's ``IOPlatformUUID`` on macOS), or, where there is none (containers
without one, an ``ioreg`` that fails), of the host name and a MAC address.
macOS has no machine-id file and renames the host by itself (a name given by
DHCP, ``-2`` added after a clash on the network), so a Mac identified by its
host name would count as a new device after each rename (RULES M8: three
devices and the user is locked out). Products that know better pass their own
``device_id``.
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
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


#: How macOS tells its hardware UUID (the "Hardware UUID" of System Information).
_IOREG = ("/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice")
_IOREG_TIMEOUT = 2.0  # seconds: it answers in milliseconds; a product never hangs on it
_PLATFORM_UUID = re.compile(r'"IOPlatformUUID"\s*=\s*"([^"]+)"')


def _mac_platform_uuid() -> str | None:
    """The Mac's ``IOPlatformUUID`` (as ``ioreg`` prints it), or ``None`` if not found."""
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command, no input of anyone's
            _IOREG, capture_output=True, text=True, timeout=_IOREG_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = _PLATFORM_UUID.search(done.stdout or "") if done.returncode == 0 else None
    return found.group(1) if found else None


def machine_identity() -> str:
    """The raw, private identity of this machine that the device id is hashed from."""
    found: str | None
    if sys.platform == "win32":
        found = _windows_machine_guid()
    elif sys.platform == "darwin":
        found = _mac_platform_uuid()
    else:
        found = _linux_machine_id()
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
