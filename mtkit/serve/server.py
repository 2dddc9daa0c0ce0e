"""Running the server: bind, start uvicorn, load the models on the decode thread, drain on SIGTERM.

The socket is bound before anything else, so a busy port fails at once with one line, and
``--port 0`` takes any free port (the line announcing the server names it). Models load after
the server has started: /health answers 503 ``loading`` until they are ready. SIGTERM (or
Ctrl-C) stops accepting connections, lets every request in flight finish, then exits with 0.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable

from mtkit.errors import MtkitError
from mtkit.serve import require_extra
from mtkit.serve.models import LoadOptions, ServedModel, decode_jobs, parse_model_specs
from mtkit.serve.settings import ServeSettings


def serve(
    model_specs: list[str], settings: ServeSettings, load: LoadOptions, threads: int | None = None,
    access_log: bool = False, log: Callable[[str], None] = print,
) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    require_extra()
    import uvicorn

    from mtkit.serve.app import State, create_app
    from mtkit.serve.batching import Batcher

    models = [ServedModel(name, path) for name, path in parse_model_specs(model_specs)]
    for model in models:
        model.check()
    batcher = Batcher(decode_jobs, settings.max_batch, settings.max_wait_ms / 1000, settings.max_queue)
    state = State(settings, models, batcher)
    sock = bind(settings.host, settings.port)
    url = f"http://{_url_host(settings.host)}:{sock.getsockname()[1]}/"
    server = uvicorn.Server(uvicorn.Config(
        create_app(state), log_level="warning", access_log=access_log, timeout_graceful_shutdown=None,
    ))
    failures: list[BaseException] = []

    def load_models() -> None:  # on the decode thread, while the server already answers /health
        try:
            if threads:  # set on the thread that decodes, the one whose thread count matters
                import torch

                torch.set_num_threads(threads)
            for model in models:
                model.load(load)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
            server.should_exit = True
            return
        state.ready = True
        names = ", ".join(f"{m.name} ({m.info['source_language']}→{m.info['target_language']})" for m in models)
        log(f"mtkit: serving {names} at {url} (API docs: {url}docs); Ctrl-C or SIGTERM stops")

    batcher.start(before=load_models)
    # uvicorn turns SIGTERM and SIGINT into a graceful shutdown, then re-raises them to the
    # handlers it found: make those no-ops, so a drained server exits normally.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        batcher.close(timeout=settings.timeout)
        sock.close()
    if failures:
        raise failures[0]
    stats = batcher.stats()
    log(f"mtkit: stopped after {stats['requests']:,} requests in {stats['decodes']:,} decodes")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise MtkitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise MtkitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
