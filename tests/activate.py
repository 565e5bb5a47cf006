"""Socket activation as systemd does it, for the tests: bind and listen
on 127.0.0.1:0 (or pass a non-listening descriptor with --not-listening),
put the socket at descriptor 3, set LISTEN_FDS=1 and LISTEN_PID to this
process (exec keeps the pid), print the port on stderr, then exec the
command.

    python3 activate.py [--not-listening] PORTFILE COMMAND ARG...
"""
import os
import socket
import sys

args = sys.argv[1:]
listening = True
if args and args[0] == "--not-listening":
    listening = False
    args = args[1:]
portfile, cmd = args[0], args[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
if listening:
    s.listen(16)
with open(portfile, "w") as f:
    f.write("%d\n" % s.getsockname()[1])
if s.fileno() != 3:
    os.dup2(s.fileno(), 3, inheritable=True)
os.set_inheritable(3, True)  # dup2 onto itself keeps close-on-exec
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execvp(cmd[0], cmd)
