"""The web console the scheduler serves at ``/console`` on its HTTP port (``sx-worker run``'s embedded
scheduler included): jobs, instances with live progress and logs, workflow graphs, workers, alarms.

Server-rendered pages (Jinja2 templates) made live with htmx, every asset inside the package, so it
needs no Node.js and no internet. It reads and acts only through the scheduler's ``Services``, as the
OpenAPI does, and with access keys configured asks for sign-in with one (``_session``).
"""

from sx.scheduler.console._app import create_console

__all__ = ["create_console"]
