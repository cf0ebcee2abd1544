"""A WSGI application for the gunicorn test: its worker's pid, and the master's."""

import json
import os


def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "master": os.getppid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
