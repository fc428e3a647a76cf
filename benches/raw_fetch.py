"""Raw protocol-v2 fetches against a smart-HTTP git server, timed, the pack discarded (the
server's cost without the client's indexing).

    python3 benches/raw_fetch.py URL full [PARALLEL]     want every branch and tag
    python3 benches/raw_fetch.py URL incremental OLD NEW want tag NEW, have tag OLD's commit, thin
    python3 benches/raw_fetch.py URL depth1 TAG          want tag TAG, deepen 1 (as git fetch --depth=1)
    python3 benches/raw_fetch.py URL shape NAME OLD NEW  want tag NEW with a request shape of
        issue 7: have, thin, deepen1, since (OLD's date), not (deepen-not OLD),
        blob_limit (have OLD, filter blob:limit=1000)

Prints "<seconds> <bytes received>" (for PARALLEL > 1: wall seconds for all, total bytes);
shape prints "<seconds> <bytes> <objects>".
"""
import http.client
import sys
import threading
import time
import urllib.parse


def pkt(s):
    b = s.encode() if isinstance(s, str) else s
    return b"%04x" % (len(b) + 4) + b


def post(url, body):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    c.request("POST", u.path + "/git-upload-pack", body=body, headers={
        "Content-Type": "application/x-git-upload-pack-request",
        "Accept": "application/x-git-upload-pack-result",
        "Git-Protocol": "version=2",
    })
    r = c.getresponse()
    if r.status != 200:
        raise SystemExit(f"HTTP {r.status}: {r.read()[:300]!r}")
    return c, r


def read_all(r):
    n = 0
    data = b""
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            return n, data
        n += len(chunk)
        if len(data) < 1 << 16:
            data += chunk[: (1 << 16) - len(data)]


def pack_objects(head):
    """The object count in the PACK header of a (side-band) response start."""
    i = head.find(b"PACK\x00\x00\x00\x02")
    if i < 0 or i + 12 > len(head):
        return -1
    return int.from_bytes(head[i + 8:i + 12], "big")


def ls_refs(url):
    body = pkt("command=ls-refs\n") + pkt("agent=bench\n") + b"0001" + pkt("peel\n")
    body += pkt("ref-prefix refs/heads/\n") + pkt("ref-prefix refs/tags/\n") + b"0000"
    c, r = post(url, body)
    raw = r.read()
    c.close()
    refs, i = {}, 0
    while i + 4 <= len(raw):
        n = int(raw[i:i + 4], 16)
        if n < 4:
            i += 4
            continue
        line = raw[i + 4:i + n].decode().rstrip("\n").split(" ")
        i += n
        peeled = next((a[len("peeled:"):] for a in line[2:] if a.startswith("peeled:")), None)
        refs[line[1]] = (line[0], peeled or line[0])
    return refs


def fetch(url, args, objects=False):
    body = pkt("command=fetch\n") + pkt("agent=bench\n") + b"0001"
    body += b"".join(pkt(a + "\n") for a in args) + pkt("done\n") + b"0000"
    t0 = time.monotonic()
    c, r = post(url, body)
    n, head = read_all(r)
    c.close()
    if b"packfile" not in head:
        raise SystemExit(f"no packfile section: {head[:300]!r}")
    if objects:
        return time.monotonic() - t0, n, pack_objects(head)
    return time.monotonic() - t0, n


def commit_date(oid):
    """Committer time of `oid`, from the bare repository in $BENCH_GIT_DIR."""
    import os
    import subprocess
    return int(subprocess.check_output(
        ["git", "--git-dir", os.environ["BENCH_GIT_DIR"], "log", "-1", "--format=%ct", oid]).strip())


def main():
    url, mode = sys.argv[1], sys.argv[2]
    refs = ls_refs(url)
    base = ["ofs-delta", "no-progress"]
    if mode == "full":
        wants = sorted({oid for oid, _ in refs.values()})
        args = base + [f"want {w}" for w in wants]
        par = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        if par == 1:
            t, n = fetch(url, args)
            print(f"{t:.3f} {n}")
            return
        results = []
        def one():
            results.append(fetch(url, args))
        threads = [threading.Thread(target=one) for _ in range(par)]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if len(results) != par:
            raise SystemExit(f"only {len(results)} of {par} fetches succeeded")
        print(f"{time.monotonic() - t0:.3f} {sum(n for _, n in results)}")
    elif mode == "incremental":
        old, new = refs["refs/tags/" + sys.argv[3]], refs["refs/tags/" + sys.argv[4]]
        t, n = fetch(url, base + ["thin-pack", f"want {new[0]}", f"have {old[1]}"])
        print(f"{t:.3f} {n}")
    elif mode == "depth1":
        tag = refs["refs/tags/" + sys.argv[3]]
        # What `git fetch --depth=1 URL refs/tags/TAG:refs/tags/TAG` sends (the go command's
        # GOPROXY=direct fetch of one version into a new module cache).
        t, n = fetch(url, ["thin-pack", "no-progress", "include-tag", "ofs-delta", "deepen 1",
                           f"want {tag[0]}"])
        print(f"{t:.3f} {n}")
    elif mode == "shape":
        shape, old, new = sys.argv[3], refs["refs/tags/" + sys.argv[4]], refs["refs/tags/" + sys.argv[5]]
        want = [f"want {new[0]}"]
        lines = {
            "have": want + [f"have {old[1]}"],
            "thin": ["thin-pack"] + want + [f"have {old[1]}"],
            "deepen1": want + ["deepen 1"],
            "since": want + [f"deepen-since {commit_date(old[1])}"],
            "not": want + [f"deepen-not refs/tags/{sys.argv[4]}"],
            "blob_limit": want + [f"have {old[1]}", "filter blob:limit=1000"],
        }[shape]
        t, n, objs = fetch(url, base + lines, objects=True)
        print(f"{t:.3f} {n} {objs}")
    else:
        raise SystemExit(f"unknown mode {mode}")


main()
