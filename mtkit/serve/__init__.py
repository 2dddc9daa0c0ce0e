"""``mtkit serve``: trained models behind a JSON API and a page to try them on.

settings   what the server may do (limits, batching, security), from the command line
models     the named models it holds: a ``Translator`` each, and what /models says of them
batching   the bounded queue and the decode thread that batches requests together
app        the FastAPI application: routes, validation, errors, the API key
server     binding, loading, uvicorn, draining on SIGTERM
static/    the page at / (plain HTML, CSS and JavaScript, served by mtkit itself)

It uses the library (``mtkit.translate``, ``mtkit.decoding``) and nothing in the library uses it.
FastAPI and uvicorn are an optional extra: ``pip install 'mtkit[serve]'``.
"""

from __future__ import annotations

from mtkit.errors import MtkitError

INSTALL_HINT = "mtkit serve needs FastAPI and uvicorn: pip install 'mtkit[serve]'"


def require_extra() -> None:
    """Fail with one line saying how to install the serve extra when it is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MtkitError(INSTALL_HINT) from None
