"""A pass-through TCP proxy in front of an S3 server that delays every HTTP request by a fixed
time (as a real S3's first-byte latency would) and counts requests.

    python3 benches/s3_delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS COUNT_FILE

A request is a client-to-server read that starts with an HTTP method; COUNT_FILE always holds
"<requests> <GET> <PUT> <other>".

Two threads per connection copy with large blocking reads (the copies run in the kernel, without
the interpreter's lock): the proxy models a store's latency and must not limit its throughput
(an asyncio version with 64 KiB reads held it to about 450 MB/s, below SeaweedFS's own).
"""
import socket
import sys
import threading
import time

LISTEN, TARGET, DELAY, COUNT_FILE = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000, sys.argv[4]
BUFFER = 1 << 20
counts = {"GET": 0, "PUT": 0, "other": 0}
lock = threading.Lock()
METHODS = (b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ")


def record(chunk):
    for m in METHODS:
        if chunk.startswith(m):
            k = m.strip().decode()
            with lock:
                counts[k if k in counts else "other"] += 1
                total = sum(counts.values())
                with open(COUNT_FILE, "w") as f:
                    f.write(f"{total} {counts['GET']} {counts['PUT']} {counts['other']}\n")
            return True
    return False


def pipe(src, dst, requests):
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(buf)
            if n == 0:
                break
            if requests and record(bytes(view[:8])):
                time.sleep(DELAY)
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def handle(client):
    try:
        server = socket.create_connection(("127.0.0.1", TARGET))
    except OSError:
        client.close()
        return
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    up = threading.Thread(target=pipe, args=(client, server, True), daemon=True)
    up.start()
    pipe(server, client, False)
    up.join()
    client.close()
    server.close()


def main():
    with open(COUNT_FILE, "w") as f:
        f.write("0 0 0 0\n")
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", LISTEN))
    ls.listen(512)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


main()
