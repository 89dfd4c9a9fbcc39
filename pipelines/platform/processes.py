"""Host processes of the embedded platform: start detached, find, wait for, stop.

Every service `sluice up` starts (LocalStack, MLflow, Prometheus, the CI runner, the stand-in) runs
in a session of its own with a pid file and a log file under `<state_dir>/logs/`, so `sluice down`
can stop it (and everything it started) from another shell, and a second `sluice up` finds it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from pipelines.config import Settings

STOP_TIMEOUT = 20.0

Echo = Callable[[str], None]


class PlatformError(RuntimeError):
    """A failure whose message already says what to do next."""


def pid_file(settings: Settings, service: str) -> Path:
    return settings.logs_dir / f"{service}.pid"


def log_file(settings: Settings, service: str) -> Path:
    return settings.logs_dir / f"{service}.log"


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """Status and body, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return int(e.code), b""
    except (OSError, ValueError):
        return None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _pid_alive(pid: int) -> bool:
    try:
        # Reap it if it is our own exited child: a zombie still answers kill(pid, 0).
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_is(pid: int, marker: str) -> bool:
    """Guard against pid reuse after a reboot: the command line must still mention the service."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():  # not Linux: trust the pid file
        return True
    try:
        return marker in cmdline.read_bytes().decode(errors="replace")
    except OSError:
        return False


def running_pid(settings: Settings, service: str) -> int | None:
    """Pid from the service's pid file if that process is still alive; removes stale pid files."""
    path = pid_file(settings, service)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if _pid_alive(pid) and _pid_is(pid, service):
        return pid
    path.unlink(missing_ok=True)
    return None


def start_detached(settings: Settings, service: str, cmd: list[str], env: Mapping[str, str]) -> int:
    """Start `cmd` in its own session (survives this shell, stoppable as a group); returns its pid."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = log_file(settings, service)
    with log.open("ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=settings.state_dir,
            start_new_session=True,
        )
    pid_file(settings, service).write_text(f"{proc.pid}\n")
    # Until the child has exec'd, /proc/<pid>/cmdline is still ours and running_pid() would take it
    # for a stale pid file: wait (briefly) for the exec.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proc.poll() is None and not _pid_is(proc.pid, service):
        time.sleep(0.01)
    return proc.pid


def stop_service(settings: Settings, service: str, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM the service's process group, SIGKILL it after `timeout`. Returns the pid it stopped."""
    pid = running_pid(settings, service)
    if pid is None:
        pid_file(settings, service).unlink(missing_ok=True)
        return None
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    # Kill the group even if the leader is gone: workers (uvicorn) may outlive it.
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    pid_file(settings, service).unlink(missing_ok=True)
    return pid


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session made pid the group leader
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def wait_until(
    check: Callable[[], bool], *, service: str, settings: Settings, pid: int | None, timeout: float
) -> float:
    """Poll `check` until true; fail early if the process died. Returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        if pid is not None and not _pid_alive(pid):
            log = log_file(settings, service)
            raise PlatformError(
                f"{service} exited during startup. Last lines of {log}:\n{tail(log)}\n"
                f"Fix the cause shown above, then run `sluice up` again."
            )
        time.sleep(0.25)
    log = log_file(settings, service)
    raise PlatformError(
        f"{service} did not become healthy within {timeout:.0f}s. Look at {log}:\n{tail(log)}\n"
        f"Then `sluice down` and `sluice up` again."
    )


def run(cmd: list[str], *, what: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    env_ = None if env is None else dict(env)
    proc = subprocess.run(cmd, env=env_, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
        raise PlatformError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(out))
    return proc.stdout


def start_service(
    settings: Settings,
    service: str,
    *,
    label: str,
    url: str,
    address: tuple[str, int],
    port_env: str,
    healthy: Callable[[], bool],
    launch: Callable[[], tuple[list[str], Mapping[str, str]]],
    timeout: float,
    echo: Echo,
) -> int | None:
    """Start `service` unless it already answers, then wait until healthy; returns its pid.

    `launch` is called only when a process must be started (LocalStack's virtualenv is built there).
    """
    pid = running_pid(settings, service)
    if healthy():
        echo(f"{service}: already running at {url} (pid {pid or 'unknown'})")
        return pid
    host, port = address
    if pid is None and port_in_use(host, port):
        raise PlatformError(
            f"port {port} on {host} is taken by something that is not {label}; "
            f"stop it or set {port_env} to a free port."
        )
    if pid is None:
        cmd, env = launch()
        pid = start_detached(settings, service, cmd, env)
        echo(f"{service}: starting (pid {pid}, log {log_file(settings, service)})")
    took = wait_until(healthy, service=service, settings=settings, pid=pid, timeout=timeout)
    echo(f"{service}: healthy at {url} after {took:.1f}s")
    return pid
