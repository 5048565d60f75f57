"""A one-node Ceph cluster with RADOS Gateway on loopback: a second real S3 server for the tests.

Ceph 16 (Pacific, the Debian packages) has no single-process RGW, so this starts a monitor, one OSD on
`memstore` (RAM, no disk) and `radosgw`, all under one temporary directory, all on 127.0.0.1, with
`cephx` off. RGW serves plain HTTP and HTTPS (a self-signed certificate), SSE-KMS through the `testing`
KMS backend (a few fixed key names, see `RgwInfo.kms_keys`), and refuses encryption headers over plain
HTTP (`rgw crypt require ssl`). Two users are created with `radosgw-admin`. Stopped by PID, in reverse order.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from engine.sandbox import (
    HOST,
    REGION,
    SandboxError,
    SandboxInfo,
    _client,
    _free_port,
    _tail,
    write_self_signed_cert,
)

DAEMONS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "ceph-authtool", "monmaptool")
DEBIAN_PACKAGES = "ceph-mon ceph-osd radosgw ceph-common"
START_TIMEOUT = 90.0   # seconds for the whole cluster (about 15 s here)
STOP_TIMEOUT = 10.0
KMS_KEY_NAMES = ("testkey-1", "testkey-2", "testkey-3")
MEMSTORE_BYTES = 2 * 1024 ** 3
OSD_ATTEMPTS = 3


class DaemonExitedError(SandboxError):
    """A Ceph daemon exited while the sandbox waited for it."""


@dataclass(frozen=True, slots=True)
class RgwInfo(SandboxInfo):
    """How to reach a running RGW; `kms_keys` are the SSE-KMS key ids its `testing` backend knows.
    `kms_url` is empty: RGW's KMS is internal. The "limited" identity is a second, unrelated user."""

    kms_keys: tuple[str, ...] = ()


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS if shutil.which(name) is None]


def _conf(d: Path, fsid: str, mon_port: int, http_port: int, https_port: int, keys: dict[str, bytes]) -> str:
    kms = " ".join(f"{name}={base64.b64encode(raw).decode()}" for name, raw in keys.items())
    return f"""[global]
fsid = {fsid}
mon host = v1:{HOST}:{mon_port}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms bind ipv6 = false
ms bind msgr2 = false
public network = 127.0.0.0/8
run dir = {d}/run
admin socket = {d}/run/$cluster-$name.asok
log file = {d}/log/$cluster-$name.log
pid file = {d}/run/$name.pid
keyring = {d}/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
mon osd full ratio = 0.99
mon osd nearfull ratio = 0.98
osd failsafe full ratio = 0.995
[mon.a]
mon data = {d}/mon-a
[osd.0]
osd data = {d}/osd-0
osd objectstore = memstore
memstore device bytes = {MEMSTORE_BYTES}
osd max object name len = 460
osd max object namespace len = 64
[client.rgw.a]
rgw frontends = beast endpoint={HOST}:{http_port} ssl_endpoint={HOST}:{https_port} ssl_certificate={d}/tls.pem
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = {kms}
rgw crypt require ssl = true
rgw dns name = {HOST}
rgw enable usage log = false
rgw gc obj min wait = 5
rgw thread pool size = 64
"""


class RgwSandbox:
    """Start and stop a one-node Ceph cluster with RGW. `with RgwSandbox() as info:` gives an `RgwInfo`."""

    def __init__(self, workdir: str | Path | None = None) -> None:
        self._own_workdir = workdir is None
        self._workdir = Path(workdir) if workdir is not None else None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}   # pid -> its stdout/stderr file
        self._names: dict[int, str] = {}   # pid -> daemon name
        self._info: RgwInfo | None = None
        self._lock = threading.Lock()

    @property
    def info(self) -> RgwInfo:
        if self._info is None:
            raise SandboxError("RGW sandbox is not started")
        return self._info

    def start(self) -> RgwInfo:
        """Start monitor, OSD and RGW and create the users; on failure nothing is left running."""
        with self._lock:
            if self._info is not None:
                return self._info
            missing = missing_binaries()
            if missing:
                raise SandboxError(f"Ceph binaries not found: {', '.join(missing)}; install the Debian packages "
                                   f"(as root): apt-get install -y {DEBIAN_PACKAGES}")
            workdir = self._workdir or Path(tempfile.mkdtemp(prefix="rekey-rgw-"))
            self._workdir = workdir
            atexit.register(self.stop)
            try:
                self._info = self._start_locked(workdir)
                return self._info
            except BaseException:
                self._stop_locked()
                raise

    def stop(self) -> None:
        """Stop RGW, the OSD and the monitor; remove the workdir if this sandbox created it."""
        with self._lock:
            self._stop_locked()

    def __enter__(self) -> RgwInfo:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------------------

    def _start_locked(self, d: Path) -> RgwInfo:
        for sub in ("run", "log", "mon-a", "osd-0"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        cert, key = write_self_signed_cert(d)
        (d / "tls.pem").write_bytes(cert.read_bytes() + key.read_bytes())
        (d / "tls.pem").chmod(0o600)
        mon_port, http_port, https_port = _free_port(), _free_port(), _free_port()
        keys = {name: os.urandom(32) for name in KMS_KEY_NAMES}
        conf = d / "ceph.conf"
        conf.write_text(_conf(d, str(uuid.uuid4()), mon_port, http_port, https_port, keys))
        conf.chmod(0o600)
        deadline = time.monotonic() + START_TIMEOUT
        self._make_mon(d, conf, mon_port)
        self._procs.append(self._spawn(["ceph-mon", "-c", str(conf), "-i", "a", "-f"], "mon.out"))
        osd_uuid = str(uuid.uuid4())
        self._until(deadline, "ceph-mon", lambda: self._run(conf, ["ceph", "osd", "new", osd_uuid], quiet=True))
        self._run(conf, ["ceph-osd", "-c", str(conf), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid])
        self._start_osd(conf, deadline)
        self._procs.append(self._spawn(["radosgw", "-c", str(conf), "-n", "client.rgw.a", "-f"], "rgw.out"))
        self._until(deadline, "radosgw", lambda: self._http_ok(http_port))
        access, secret = self._user(conf, "rekey", deadline)
        limited_access, limited_secret = self._user(conf, "other", deadline)
        info = RgwInfo(
            s3_http=f"http://{HOST}:{http_port}", s3_https=f"https://{HOST}:{https_port}", kms_url="",
            access_key=access, secret_key=secret, limited_access_key=limited_access,
            limited_secret_key=limited_secret, region=REGION, ca_bundle=str(cert), workdir=str(d),
            kms_keys=KMS_KEY_NAMES)
        self._until(deadline, "the first bucket", lambda: _warm_up(info))
        return info

    def _start_osd(self, conf: Path, deadline: float) -> None:
        """Start the OSD and wait until the monitor counts it up. Right after the monitor forms its quorum
        an OSD sometimes exits at once ("mon_cmd_maybe_osd_create fail: 'wrong fsid'"): start it again."""
        for attempt in range(OSD_ATTEMPTS):
            self._procs.append(self._spawn(["ceph-osd", "-c", str(conf), "-i", "0", "-f"], "osd.out"))
            try:
                self._until(deadline, "ceph-osd", lambda: self._osd_up(conf))
                return
            except DaemonExitedError:
                if attempt == OSD_ATTEMPTS - 1:
                    raise
                self._procs.pop()
                time.sleep(0.5)

    def _make_mon(self, d: Path, conf: Path, mon_port: int) -> None:
        keyring, monmap = d / "keyring", d / "monmap"
        self._run(conf, ["ceph-authtool", "--create-keyring", str(keyring), "--gen-key", "-n", "mon.",
                         "--cap", "mon", "allow *"])
        self._run(conf, ["monmaptool", "--create", "--clobber", "--add", "a", f"v1:{HOST}:{mon_port}",
                         "--fsid", self._fsid(conf), str(monmap)])
        self._run(conf, ["ceph-mon", "-c", str(conf), "--mkfs", "-i", "a", "--monmap", str(monmap),
                         "--keyring", str(keyring)])

    @staticmethod
    def _fsid(conf: Path) -> str:
        for line in conf.read_text().splitlines():
            if line.startswith("fsid = "):
                return line.removeprefix("fsid = ").strip()
        raise SandboxError(f"no fsid in {conf}")

    def _user(self, conf: Path, uid: str, deadline: float) -> tuple[str, str]:
        access, secret = "RG" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)
        self._until(deadline, f"radosgw-admin user create {uid}", lambda: self._run(conf, [
            "radosgw-admin", "-c", str(conf), "user", "create", f"--uid={uid}", f"--display-name={uid}",
            f"--access-key={access}", f"--secret-key={secret}"], quiet=True))
        return access, secret

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        assert self._workdir is not None
        with open(self._workdir / "log" / log_name, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self._workdir, env=_env(), start_new_session=True)
        self._logs[proc.pid] = self._workdir / "log" / log_name
        self._names[proc.pid] = argv[0]
        return proc

    def _run(self, conf: Path, argv: list[str], *, quiet: bool = False) -> str | None:
        """Run a Ceph tool to completion: None on success, else why not (raises unless `quiet`)."""
        if argv[0] in ("ceph", "ceph-authtool", "monmaptool") and "-c" not in argv:
            argv = [argv[0], "-c", str(conf), *argv[1:]] if argv[0] == "ceph" else argv
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=30, env=_env(), check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            why = f"{argv[0]} timed out"
        else:
            if proc.returncode == 0:
                return None
            why = f"{' '.join(argv[:4])}: exit {proc.returncode}: " + \
                (proc.stderr or proc.stdout).decode(errors="replace").strip()[-500:]
        if quiet:
            return why
        raise SandboxError(why)

    def _osd_up(self, conf: Path) -> str | None:
        proc = subprocess.run(["ceph", "-c", str(conf), "osd", "stat"], capture_output=True, timeout=30,
                              env=_env(), check=False, stdin=subprocess.DEVNULL)
        out = proc.stdout.decode(errors="replace")
        return None if " 1 up" in out else f"osd stat: {out.strip() or proc.stderr.decode(errors='replace')}"

    @staticmethod
    def _http_ok(port: int) -> str | None:
        conn = http.client.HTTPConnection(HOST, port, timeout=2.0)
        try:
            conn.request("GET", "/")
            status = conn.getresponse().status
        except OSError as exc:
            return f"HTTP: {exc}"
        finally:
            conn.close()
        return None if status == 200 else f"HTTP {status}"

    def _until(self, deadline: float, what: str, ready: object) -> None:
        """Poll `ready()` (None = ready, else why not) until it passes, a daemon dies or time runs out."""
        assert callable(ready) and self._workdir is not None
        why: str | None = "not polled"
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise DaemonExitedError(f"{self._names[proc.pid]} exited with status {proc.returncode} while "
                                            f"waiting for {what}; logs in {self._workdir / 'log'}:\n"
                                            + _tail(self._logs[proc.pid]) + "\n" + self._daemon_log(proc))
            why = ready()
            if why is None:
                return
            time.sleep(0.2)
        raise SandboxError(f"{what} not ready after {START_TIMEOUT:.0f} s ({why}); logs in {self._workdir / 'log'}")

    def _daemon_log(self, proc: subprocess.Popen[bytes]) -> str:
        assert self._workdir is not None
        name = {"ceph-mon": "ceph-mon.a.log", "ceph-osd": "ceph-osd.0.log", "radosgw": "ceph-client.rgw.a.log"}
        return _tail(self._workdir / "log" / name.get(self._names[proc.pid], "none"), 15)

    def _stop_locked(self) -> None:
        for proc in reversed(self._procs):
            _terminate(proc)
        self._procs.clear()
        atexit.unregister(self.stop)
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._info = None


def _warm_up(info: RgwInfo) -> str | None:
    """Create, write and delete a bucket: RGW creates its data pools on the first bucket (about 4 s), so
    that happens here, while the sandbox starts, rather than in the first test."""
    s3 = _client(info, "s3", info.s3_https, timeout=20.0)
    bucket = "rekey-warm-up-" + secrets.token_hex(6)
    try:
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="probe", Body=b"probe", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=info.kms_keys[0])
        s3.delete_object(Bucket=bucket, Key="probe")
        s3.delete_bucket(Bucket=bucket)
    except Exception as exc:
        return f"S3: {exc}"
    finally:
        s3.close()
    return None


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("CEPH_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
