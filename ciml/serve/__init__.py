"""``ciml serve``: a web dashboard, a REST API and Prometheus metrics over a data path.

The app is built by :func:`create_app` (FastAPI, served by uvicorn from
``ciml serve``; tests and benchmarks build it the same way).  Pages are
rendered on the server from Jinja2 templates shipped in this package; the
API lives under ``/api/v1``; ``/metrics`` speaks Prometheus' text format.
FastAPI and its friends are imported only here, never by ``ciml --help``.
"""


def create_app(*args, **kwargs):
    """The ASGI app; see :func:`ciml.serve.app.create_app` for the parameters."""
    from ciml.serve.app import create_app as _create

    return _create(*args, **kwargs)
