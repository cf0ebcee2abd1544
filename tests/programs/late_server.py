"""A TCP server that binds 127.0.0.1:PORT only after DELAY seconds, then accepts and
closes connections until it is stopped.

    late_server.py PORT DELAY
"""

from __future__ import annotations

import socket
import sys
import time

port, delay = int(sys.argv[1]), float(sys.argv[2])
time.sleep(delay)
server = socket.create_server(("127.0.0.1", port))
print(f"bound {port}", flush=True)
while True:
    connection, _ = server.accept()
    connection.close()
