"""Run `ckatlas` in a subprocess whose stderr is a terminal (a pseudo-terminal) or a pipe, to see
what a user at a terminal sees: progress bars appear on a terminal only."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import termios
import subprocess
import sys


def ckatlas_stderr(argv: list[str], terminal: bool, timeout: float = 300) -> tuple[int, str]:
    """Run `ckatlas argv` with stderr a pseudo-terminal (`terminal`) or a pipe; its exit code and stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ckatlas.cli", *argv]
    if not terminal:
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=timeout)
        return done.returncode, done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column window (else 0)
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the child has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return child.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")
