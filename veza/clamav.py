"""The clamd client: a file in, a verdict out, or ScanUnavailable.

Built on the `clamd` package's connection and response parsing, with the
two ways of handing clamd a file that are fast:

- over a unix socket (clamd on this machine), the open file descriptor is
  passed to clamd (FILDES, SCM_RIGHTS): clamd reads the file itself, as fast
  as its own SCAN, without needing permission on our storage path;
- over TCP (clamd elsewhere), the content is streamed with INSTREAM in
  1 MiB chunks. The package's own `instream` sends 1 KiB chunks, several
  times slower.

And a third, for content that is not on this machine yet (a bucket's):
`Scanner.stream()` is an INSTREAM session, over either socket, fed the
bytes as they arrive from the store, so that clamd scans them while they
are fetched rather than after.

Whatever goes wrong on the way (clamd down, a timeout, an ERROR reply) is
ScanUnavailable: the caller retries and never takes it for "clean". A file
clamd could not inspect (its heuristics for encrypted content, limits
exceeded, broken executables: the alerts of deploy/clamd.conf) is
Unscannable: not infected, not clean, and final.
"""

from __future__ import annotations

import array
import functools
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import clamd

from veza.settings import get_settings

INSTREAM_CHUNK_SIZE = 1024 * 1024


# The signatures clamd reports, as FOUND, for what it could not inspect
# (with the alerts of deploy/clamd.conf), and what each means to a person.
UNSCANNABLE_SIGNATURES = {
    # AlertEncrypted*: Heuristics.Encrypted.Zip, .7Zip, .RAR, .PDF, ...
    "Heuristics.Encrypted.": "encrypted content",
    # AlertExceedsMax: past MaxScanSize, MaxFileSize, MaxFiles, MaxRecursion, ...
    "Heuristics.Limits.Exceeded.": "beyond the scanner's limits",
    # AlertBrokenExecutables: a PE or ELF clamd cannot parse.
    "Heuristics.Broken.Executable": "a broken executable",
}


class ScanUnavailable(Exception):
    """No verdict: clamd could not be reached, timed out, or answered ERROR."""


class Unscannable(Exception):
    """No verdict, and none will come by retrying: the content cannot be
    inspected (encrypted, past the scanner's limits, a format it does not
    unpack). Neither clean nor infected. The message says why, for people;
    `signature` is clamd's, when clamd said so."""

    def __init__(self, reason: str, signature: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.signature = signature


def unscannable_reason(signature: str) -> str | None:
    """What a clamd signature says could not be inspected, or None for a
    real finding."""
    for prefix, meaning in UNSCANNABLE_SIGNATURES.items():
        if signature.startswith(prefix):
            return f"{meaning} ({signature})"
    return None


@dataclass(frozen=True)
class Verdict:
    infected: bool
    signature: str | None  # the signature name when infected


class _Instream:
    """INSTREAM on a clamd connection: a chunk is sent as a 4-byte length
    then its bytes, at most INSTREAM_CHUNK_SIZE at a time (clamd's
    StreamMaxLength counts the whole), and a zero length ends it."""

    clamd_socket: socket.socket

    def _send_chunk(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        for start in range(0, len(view), INSTREAM_CHUNK_SIZE):
            piece = view[start : start + INSTREAM_CHUNK_SIZE]
            self.clamd_socket.sendall(struct.pack("!L", len(piece)))
            self.clamd_socket.sendall(piece)

    def _end_stream(self) -> str:
        self.clamd_socket.sendall(struct.pack("!L", 0))
        reply: str = self._recv_response()  # type: ignore[attr-defined]
        return reply


class _UnixClamd(clamd.ClamdUnixSocket, _Instream):
    def scan_path(self, path: Path) -> str:
        """FILDES: clamd scans our open descriptor; the reply is one line."""
        with open(path, "rb") as content:
            self._init_socket()
            try:
                self._send_command("FILDES")
                # The descriptor travels as ancillary data of a one-byte message.
                self.clamd_socket.sendmsg(
                    [b"\0"],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [content.fileno()]))],
                )
                reply: str = self._recv_response()
                return reply
            finally:
                self._close_socket()


class _TcpClamd(clamd.ClamdNetworkSocket, _Instream):
    def scan_path(self, path: Path) -> str:
        """INSTREAM with 1 MiB chunks, read into one reused buffer."""
        buffer = bytearray(INSTREAM_CHUNK_SIZE)
        view = memoryview(buffer)
        with open(path, "rb") as content:
            self._init_socket()
            try:
                self._send_command("INSTREAM")
                while length := content.readinto(buffer):
                    self._send_chunk(view[:length])
                return self._end_stream()
            finally:
                self._close_socket()


class StreamedScan:
    """One INSTREAM session, opened by the first chunk sent: `send` each
    chunk as it arrives, then `verdict()`. Whatever goes wrong on the way is
    ScanUnavailable, as for any scan; `close()` ends the connection in any
    case."""

    def __init__(self, connection: _UnixClamd | _TcpClamd) -> None:
        self._clamd = connection
        self.started = False

    def send(self, chunk: bytes) -> None:
        try:
            if not self.started:
                self._clamd._init_socket()
                self.started = True
                self._clamd._send_command("INSTREAM")
            self._clamd._send_chunk(chunk)
        except (clamd.ClamdError, OSError) as exc:
            raise ScanUnavailable(f"clamd stream failed: {exc}") from exc

    def verdict(self) -> Verdict:
        try:
            reply = self._clamd._end_stream()
        except (clamd.ClamdError, OSError) as exc:
            raise ScanUnavailable(f"clamd stream failed: {exc}") from exc
        return _verdict(self._clamd, reply)

    def close(self) -> None:
        if self.started:
            self._clamd._close_socket()


class Scanner:
    def __init__(
        self,
        socket_path: str | None = None,
        host: str | None = None,
        port: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """clamd on `socket_path`, or over TCP when `host` or `port` is
        given; with none of them, where the settings say (CLAMD_SOCKET, else
        CLAMD_HOST and CLAMD_PORT)."""
        settings = get_settings()
        if socket_path is None and host is None and port is None:
            socket_path = settings.clamd_socket
        timeout = settings.clamd_timeout if timeout is None else timeout
        self._connection: Callable[[], _UnixClamd | _TcpClamd]
        if socket_path:
            self._connection = functools.partial(_UnixClamd, socket_path, timeout)
        else:
            self._connection = functools.partial(
                _TcpClamd, host or settings.clamd_host, port or settings.clamd_port, timeout
            )
        self._clamd = self._connection()

    def version(self) -> str:
        """The signature version: clamd's whole VERSION line, engine/
        signature-database version/date. The one notion of it everywhere: a
        verdict stores it (metadata.clamd_version), is reused and holds
        while it is unchanged, and the rescan picks files whose stored one
        differs from this."""
        try:
            version: str = self._clamd.version()
            return version
        except (clamd.ClamdError, OSError) as exc:
            raise ScanUnavailable(f"clamd VERSION failed: {exc}") from exc

    def scan(self, path: Path) -> Verdict:
        try:
            reply = self._clamd.scan_path(path)
        except (clamd.ClamdError, OSError) as exc:
            raise ScanUnavailable(f"clamd scan failed: {exc}") from exc
        return _verdict(self._clamd, reply)

    def stream(self) -> StreamedScan:
        """An INSTREAM session to feed bytes as they arrive (a fresh
        connection of its own: the session is the connection's)."""
        return StreamedScan(self._connection())


def _verdict(connection: _UnixClamd | _TcpClamd, reply: str) -> Verdict:
    """clamd's reply to a scan, as a verdict: OK, FOUND (infected, or
    Unscannable for the heuristics of what it could not inspect), or
    anything else, ScanUnavailable."""
    try:
        _, signature, status = connection._parse_response(reply)
    except clamd.ClamdError as exc:
        raise ScanUnavailable(f"clamd answered: {reply}") from exc
    if status == "FOUND" and (reason := unscannable_reason(signature)):
        raise Unscannable(reason, signature)
    if status == "FOUND":
        return Verdict(infected=True, signature=signature)
    if status == "OK":
        return Verdict(infected=False, signature=None)
    raise ScanUnavailable(f"clamd answered: {reply}")
