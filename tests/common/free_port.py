"""Prints a TCP port that is free on this machine now (the kernel's pick for port 0)."""
import socket

with socket.socket() as s:
    s.bind(("", 0))
    print(s.getsockname()[1])
