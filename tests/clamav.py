"""A real clamd for the tests: Debian's /usr/sbin/clamd in the foreground,
on a unix socket in a temporary directory, with a one-line signature
database that the suite writes (the EICAR test file's MD5, as an .hdb).
Loading one signature takes a fraction of a second.

It also listens on a free TCP port (TCP_PORT) for the INSTREAM path.
CLAMD_SOCKET is set when this module is imported (from conftest), before
any project module reads the settings, so workers started by the tests
inherit it too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import clamd
import pytest

from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent

EICAR = clamd.EICAR
EICAR_SIGNATURE = "Eicar-Test-Signature"

CLAMD_DIR = Path(tempfile.mkdtemp(prefix="veza-clamd-"))
SOCKET = CLAMD_DIR / "clamd.sock"
os.environ["CLAMD_SOCKET"] = str(SOCKET)


# The same clamd also listens on TCP, for the INSTREAM path (clamd elsewhere).
TCP_PORT = free_port()

# The scanning policy (limits and alerts) is the one the project ships:
# the lines between the markers of deploy/clamd.conf, as scripts/clamd.sh
# copies them too.
SHIPPED_CONFIG = ROOT / "deploy" / "clamd.conf"


def scanning_policy() -> str:
    text = SHIPPED_CONFIG.read_text()
    start = text.index("# BEGIN scanning policy")
    end = text.index("# END scanning policy")
    return text[start:end]


def policy_value(option: str) -> str:
    """The value the shipped policy gives a clamd option."""
    for line in scanning_policy().splitlines():
        name, _, value = line.partition(" ")
        if name == option:
            return value.strip()
    raise KeyError(option)


CONFIG = f"""\
Foreground yes
LocalSocket {SOCKET}
TCPSocket {TCP_PORT}
TCPAddr 127.0.0.1
DatabaseDirectory {CLAMD_DIR / "db"}
TemporaryDirectory {CLAMD_DIR}
LogFile {CLAMD_DIR / "clamd.log"}
{scanning_policy()}"""


class Clamd:
    """clamd as a child process that a test can stop and start again."""

    def __init__(self) -> None:
        database = CLAMD_DIR / "db"
        database.mkdir(exist_ok=True)
        (database / "eicar.hdb").write_text(
            f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:{EICAR_SIGNATURE}\n"
        )
        self.config = CLAMD_DIR / "clamd.conf"
        self.config.write_text(CONFIG)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from tests.conftest import wait_for

        self.proc = subprocess.Popen(
            ["/usr/sbin/clamd", f"--config-file={self.config}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._answers, timeout=30, what="clamd to answer PING")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        SOCKET.unlink(missing_ok=True)

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"clamd exited:\n{(CLAMD_DIR / 'clamd.log').read_text()}")
        try:
            return clamd.ClamdUnixSocket(str(SOCKET), timeout=1).ping() == "PONG"
        except clamd.ClamdError:
            return False


@pytest.fixture(scope="session")
def clamd_server() -> Clamd:
    server = Clamd()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(CLAMD_DIR, ignore_errors=True)
