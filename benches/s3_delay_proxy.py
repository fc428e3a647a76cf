"""A pass-through TCP proxy in front of an S3 server that delays every HTTP request by a fixed
time (as a real S3's first-byte latency would) and counts requests.

    python3 benches/s3_delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS COUNT_FILE

A request is a client-to-server read that starts with an HTTP method; COUNT_FILE always holds
"<requests> <GET> <PUT> <other>".
"""
import asyncio
import sys

LISTEN, TARGET, DELAY, COUNT_FILE = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000, sys.argv[4]
counts = {"GET": 0, "PUT": 0, "other": 0}
METHODS = (b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ")


def record(chunk):
    for m in METHODS:
        if chunk.startswith(m):
            k = m.strip().decode()
            counts[k if k in counts else "other"] += 1
            total = sum(counts.values())
            with open(COUNT_FILE, "w") as f:
                f.write(f"{total} {counts['GET']} {counts['PUT']} {counts['other']}\n")
            return True
    return False


async def pipe(reader, writer, requests):
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            if requests and record(chunk):
                await asyncio.sleep(DELAY)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(creader, cwriter):
    try:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", TARGET)
    except OSError:
        cwriter.close()
        return
    await asyncio.gather(pipe(creader, swriter, True), pipe(sreader, cwriter, False))


async def main():
    with open(COUNT_FILE, "w") as f:
        f.write("0 0 0 0\n")
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
