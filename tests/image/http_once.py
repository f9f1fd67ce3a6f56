"""One HTTP answer over stdin and stdout: QEMU's `guestfwd=tcp:ADDR:PORT-cmd:...` spawns this for each
connection the guest makes to ADDR:PORT (a `-dev` chardev would take one connection only). No host
port is opened, and the guest reaches only the files of DIRECTORY.

Usage: http_once.py DIRECTORY   (GET /NAME answers the file NAME of DIRECTORY, anything else 404)
"""
from __future__ import annotations

import os
import shutil
import sys


def main(directory: str) -> None:
    reader, out = sys.stdin.buffer, sys.stdout.buffer
    request = reader.readline(8192).split()
    while reader.readline(8192) not in (b"\r\n", b"\n", b""):
        pass  # the headers: nothing in them changes the answer
    name = os.path.basename(request[1].decode("ascii", "replace")) if request[:1] == [b"GET"] and len(request) > 1 else ""
    path = os.path.join(directory, name)
    if not name or not os.path.isfile(path):
        out.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    else:
        out.write(f"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {os.path.getsize(path)}\r\n\r\n".encode())
        with open(path, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
    out.flush()


if __name__ == "__main__":
    main(sys.argv[1])
