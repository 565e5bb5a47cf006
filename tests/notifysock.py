#!/usr/bin/env python3
"""Stands in for systemd's notify socket: binds a Unix datagram socket at
PATH and appends each message received to OUT as one line (newlines inside
a message become '|'). Exits after STOPPING=1 or SECONDS (default 60)."""
import os
import socket
import sys
import time

path, out = sys.argv[1], sys.argv[2]
limit = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
end = time.monotonic() + limit
with open(out, "a", buffering=1) as f:
    f.write("bound\n")
    while time.monotonic() < end:
        s.settimeout(max(0.1, end - time.monotonic()))
        try:
            msg = s.recv(4096).decode("utf-8", "replace")
        except socket.timeout:
            break
        f.write(msg.replace("\n", "|") + "\n")
        if "STOPPING=1" in msg.split("\n"):
            break
os.unlink(path)
