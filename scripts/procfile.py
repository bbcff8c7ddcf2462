"""`honcho start`, made safe to stop while it is still starting processes.

honcho 2.0 signals each process it has started by the pid that process
reported; a Ctrl-C that comes before every process has reported one raises
KeyError: 'pid' in its signal handler. Its loop then ends without stopping
anything, and it waits for its process wrappers, which wait for their
commands, which never got the signal (honcho starts each in a session of its
own): scripts/run hangs, and a second Ctrl-C leaves every process running.

Here the signal goes to the processes started so far. Those that report a
pid afterwards are killed by honcho's own loop: once one process has
stopped and all have started, it kills what is left after its KILL_WAIT.
"""

from __future__ import annotations

import sys
from typing import Any

from honcho.command import main
from honcho.manager import Manager

signal_all = Manager._killall


def signal_started(self: Any, force: bool = False) -> None:
    everything = self._processes
    self._processes = {name: p for name, p in everything.items() if "pid" in p}
    try:
        signal_all(self, force)
    finally:
        self._processes = everything


Manager._killall = signal_started

if __name__ == "__main__":
    sys.exit(main())
