"""``ciml serve``: the web dashboard, REST API and Prometheus metrics, with a watcher if asked."""

import logging
import os
import secrets
import stat

from ciml.base import positive_int
from ciml.commands.base import data_path
from ciml.commands.watch import Watch
from ciml.errors import ConfigError

LOG = logging.getLogger(__name__)

#: The environment variable holding the write token.
TOKEN_ENV = "CIML_SERVE_TOKEN"
#: Where the token is made when neither the variable nor ``--token-file`` gives one.
DEFAULT_TOKEN_FILE = "serve-token"


def read_token(path):
    """The token in a file (its first line, stripped); refuses an empty or public file."""
    try:
        info = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            token = fh.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    if not token:
        raise ConfigError(f"the token file {path} is empty")
    if info.st_mode & stat.S_IRWXO:
        # Group-readable is how a service user reads a root-owned file; world is not.
        LOG.warning("every user can read the token file %s; chmod o-rwx it", path)
    return token


def make_token_file(path):
    """A new random token in ``path`` (mode 600), made atomically; returns it."""
    token = secrets.token_urlsafe(32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        # Two servers starting at once: the first file wins, both use it.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return read_token(path)


def _server_class():
    import contextlib
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, stopping on SIGINT/SIGTERM and then exiting 0 like ``watch``.

        uvicorn raises the signal again once it has shut down, so the process
        would die of it; a service that stopped cleanly exits 0 here.
        """

        @contextlib.contextmanager
        def capture_signals(self):
            def handler(signum, frame):
                if self.should_exit:
                    self.force_exit = True  # a second signal: stop now
                self.should_exit = True

            previous = {sig: signal.signal(sig, handler)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, old in previous.items():
                    signal.signal(sig, old)

    return Server


class Serve(Watch):
    """Serve the dashboard, REST API and /metrics of the data path (and watch, with --watch)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        for action in parser._actions:
            # Needed only to watch: checked in take_action.
            if action.dest == "dataset":
                action.required = False
                action.help = "With --watch: " + action.help
        group = parser.add_argument_group(
            "server options", "Each may also be set in the configuration file's [serve] "
            "table (host = \"0.0.0.0\", trusted_origins = [...]); the command line wins")
        group.add_argument("--host", metavar="ADDRESS", default=None,
                           help="Address to listen on (default: 127.0.0.1, this machine "
                                "only; 0.0.0.0 for every interface, better behind a "
                                "reverse proxy with TLS)")
        group.add_argument("--port", metavar="PORT", type=int, default=None,
                           help="Port to listen on (default: 8080; 0 picks a free one)")
        group.add_argument("--token-file", metavar="FILE", default=None,
                           help="File whose first line is the token writes need (label "
                                f"forms, POST /api/v1/...); ${TOKEN_ENV} overrides it "
                                "(default: state/serve-token in the data path, made with "
                                "a random token if missing)")
        group.add_argument("--protect-reads", action="store_true", default=None,
                           help="Reads need the token too: pages ask for it once, the "
                                "API and /metrics want Authorization: Bearer")
        group.add_argument("--max-upload", metavar="MIB", type=float, default=None,
                           help="Largest dstat file POST /api/v1/predict accepts, in MiB "
                                "(default: 32)")
        group.add_argument("--trusted-origin", metavar="URL", action="append", default=None,
                           help="Another origin (https://ciml.example.org) whose form "
                                "posts are accepted: the public address behind a proxy "
                                "that rewrites Host.  Repeatable")
        group.add_argument("--secure-cookies", action="store_true", default=None,
                           help="Mark cookies Secure (the public address is https)")
        group.add_argument("--root-path", metavar="PATH", default=None,
                           help="URL prefix a reverse proxy serves the app under, e.g. "
                                "/ciml")
        group.add_argument("--forwarded-allow-ips", metavar="IPS", default=None,
                           help="Proxies whose X-Forwarded-For/-Proto headers are "
                                "trusted, comma-separated (default: 127.0.0.1)")
        group.add_argument("--cache-ttl", metavar="SECONDS", type=float, default=None,
                           help="The home page and the prediction lists are answered "
                                "from a copy at most this old, shared by every visitor "
                                "(default: 2; 0: never)")
        group.add_argument("--processes", metavar="N", type=positive_int, default=None,
                           help="Processes that answer requests (default: 1); one per "
                                "core serves many concurrent users.  Not with --watch")
        group.add_argument("--watch", action="store_true",
                           help="Also watch for finished runs in this process, with the "
                                "watch options above (--dataset, --trigger...)")
        return parser

    def _token(self, parsed_args, path):
        token = os.environ.get(TOKEN_ENV, "").strip()
        if token:
            return token, f"${TOKEN_ENV}"
        if parsed_args.token_file:
            return read_token(parsed_args.token_file), parsed_args.token_file
        if path.is_remote:
            # A generated token is kept in a 0600 file; on a shared object
            # store anyone who can read the bucket would hold the write token.
            raise ConfigError(
                f"the data path {path} is on object storage, where ciml serve keeps no "
                f"token: give the write token in ${TOKEN_ENV} or --token-file FILE (a "
                "local file of your own, readable only by you)")
        default = os.path.join(path.state, DEFAULT_TOKEN_FILE)
        if os.path.exists(default):
            return read_token(default), default
        return make_token_file(default), default

    @staticmethod
    def _apply_config(parsed_args):
        """Options not given on the command line from the ``[serve]`` table, else defaults."""
        from ciml.base import parse_bool, settings

        conf = settings("serve")

        def origins(value):
            if isinstance(value, str):
                return [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("a list of URLs, e.g. [\"https://ciml.example.org\"]")
            return value

        for dest, key, kind, default in (
                ("host", "host", str, "127.0.0.1"), ("port", "port", int, 8080),
                ("token_file", "token_file", str, None),
                ("protect_reads", "protect_reads", parse_bool, False),
                ("max_upload", "max_upload", float, 32.0),
                ("trusted_origin", "trusted_origins", origins, []),
                ("secure_cookies", "secure_cookies", parse_bool, False),
                ("root_path", "root_path", str, ""),
                ("forwarded_allow_ips", "forwarded_allow_ips", str, "127.0.0.1"),
                ("cache_ttl", "cache_ttl", float, 2.0),
                ("processes", "processes", positive_int, 1)):
            if getattr(parsed_args, dest) is None:
                setattr(parsed_args, dest, conf.get(key, kind, default))

    def take_action(self, parsed_args):
        # FastAPI and uvicorn load here, never for ciml --help.
        import uvicorn

        from ciml.serve.app import ServeSettings, create_app

        self._apply_config(parsed_args)

        if parsed_args.watch and not parsed_args.dataset:
            raise ConfigError("--watch needs --dataset (the model's dataset)")
        if parsed_args.watch and parsed_args.processes > 1:
            raise ConfigError("--watch runs in one process: give --processes 1, or run "
                              "ciml watch beside ciml serve, sharing the store")
        if not 0 <= parsed_args.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535, not {parsed_args.port}")
        if not 0 <= parsed_args.cache_ttl <= 3600:
            raise ConfigError("--cache-ttl must be between 0 and 3600 seconds")
        if parsed_args.max_upload <= 0:
            raise ConfigError("--max-upload must be more than 0 MiB")
        path = data_path(self, create=True)
        token, token_from = self._token(parsed_args, path)
        settings = ServeSettings(
            data_path=path, store_uri=parsed_args.store_uri, token=token,
            protect_reads=parsed_args.protect_reads,
            max_upload=int(parsed_args.max_upload * 1024 * 1024),
            trusted_origins=tuple(o.rstrip("/") for o in parsed_args.trusted_origin),
            secure_cookies=parsed_args.secure_cookies, cache_ttl=parsed_args.cache_ttl)
        options = dict(
            root_path=parsed_args.root_path, proxy_headers=True,
            forwarded_allow_ips=parsed_args.forwarded_allow_ips,
            log_level="warning" if self.app.options.verbose_level <= 1 else "info",
            # A line per request only when asked (-v): at warning level uvicorn still
            # builds each one's arguments before the logger drops it.
            access_log=self.app.options.verbose_level > 1,
            server_header=False, timeout_graceful_shutdown=10)
        if parsed_args.host not in ("127.0.0.1", "localhost", "::1"):
            LOG.warning("listening on %s: other machines can reach this server; put it "
                        "behind a reverse proxy with TLS", parsed_args.host)
        self.app.stderr.write(f"writes need the token from {token_from}\n")
        if parsed_args.processes > 1:
            return self._serve_workers(parsed_args, settings, options)
        app = create_app(settings=settings)
        server = _server_class()(uvicorn.Config(app, host=parsed_args.host,
                                                port=parsed_args.port, **options))
        if parsed_args.watch:
            return self._serve_watching(parsed_args, app, server)
        self._run(server)
        return 0

    def _announce(self, sockname):
        host, port = sockname[:2]
        host = f"[{host}]" if ":" in host else host
        # Tests and scripts read this line for the port (--port 0).
        self.app.stderr.write(f"ciml serve: listening on http://{host}:{port}/\n")
        self.app.stderr.flush()

    def _serve_workers(self, parsed_args, settings, options):
        """``--processes N``: uvicorn's supervisor and N processes sharing one socket."""
        import socket

        import uvicorn

        settings.session_secret = secrets.token_bytes(32)
        family = socket.AF_INET6 if ":" in parsed_args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((parsed_args.host, parsed_args.port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {parsed_args.host}:{parsed_args.port}: "
                              f"{exc.strerror}") from None
        # Listening before the workers start: a client never meets a closed port.
        sock.listen(2048)
        sock.set_inheritable(True)
        # The workers are spawned: they rebuild the app from these variables.
        os.environ.update(settings.to_environment())
        self._announce(sock.getsockname())
        uvicorn.run("ciml.serve.app:app_from_environment", factory=True,
                    fd=sock.fileno(), workers=parsed_args.processes, **options)
        return 0

    def _run(self, server):
        import asyncio

        async def announce():
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.05)
            for sock in (s for srv in getattr(server, "servers", []) for s in srv.sockets):
                self._announce(sock.getsockname())

        async def main():
            task = asyncio.ensure_future(announce())
            try:
                await server.serve()
            finally:
                task.cancel()

        try:
            # uvloop where installed (uvicorn's own choice): a cheaper event loop.
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
        asyncio.run(main())
        if server.should_exit and not server.started:
            raise ConfigError("the server could not start (see the message above)")

    def _serve_watching(self, parsed_args, app, server):
        from ciml.serve.watching import ServedWatcher, WatchThread

        state = app.state.ciml
        with self.watching(parsed_args, watcher_class=ServedWatcher, handle_signals=False,
                           metrics=state.watch_metrics) as watcher:
            state.watcher = watcher
            thread = WatchThread(watcher)
            thread.start()
            try:
                self._run(server)
            finally:
                thread.stop(parsed_args.drain_timeout)
        if thread.error is not None:
            raise thread.error
        return 0
