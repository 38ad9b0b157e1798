#!/usr/bin/env python3
"""A TCP relay that limits each connection's server-to-client bytes to RATE bytes/s.

bench/links.sh's "conn" link: what a CDN's per-connection throttle does, with no burst
allowance beyond BURST bytes (nginx's limit_rate is per request and lets the first second's
worth through at once, so a 16 MiB Range request would not be limited at all). TLS passes
through untouched: the client talks to the registry itself.

    bench/conn-limit.py LISTEN_PORT TARGET_HOST:PORT RATE

Prints "ready" once it listens and "connection N" for each connection it accepts; runs
until killed.
"""
import socket
import sys
import threading
import time

CHUNK = 64 * 1024
BURST = 256 * 1024


def pump(src, dst, rate):
    """Copy src to dst; with a rate, a token bucket of BURST bytes paces the copy."""
    tokens, last = float(BURST), time.monotonic()
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            if rate:
                now = time.monotonic()
                tokens = min(BURST, tokens + (now - last) * rate) - len(data)
                last = now
                if tokens < 0:
                    time.sleep(-tokens / rate)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    listen_port, target, rate = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    host, port = target.rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(128)
    print("ready", flush=True)
    accepted = 0
    while True:
        client, _ = server.accept()
        accepted += 1
        print(f"connection {accepted}", flush=True)
        try:
            upstream = socket.create_connection((host, int(port)))
        except OSError:
            client.close()
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(client, upstream, 0), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, rate), daemon=True).start()


if __name__ == "__main__":
    main()
