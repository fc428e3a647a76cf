"""Write a `git fast-import` stream for a synthetic repository shaped like a real project:
GEN_COMMITS commits (default 40000) on main, each changing a few of GEN_FILES text files
(default 2000, in 40 directories) by editing lines (so repacking finds deltas), an annotated
tag every 100 commits, and a branch every 400 commits. Deterministic.

    git init --bare big.git && python3 benches/gen_repo.py | git -C big.git fast-import
"""
import os
import random
import sys

COMMITS = int(os.environ.get("GEN_COMMITS", "40000"))
FILES = int(os.environ.get("GEN_FILES", "2000"))
rng = random.Random(42)
out = sys.stdout.buffer
WORDS = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))))
         for _ in range(5000)]


def line():
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))


def data(b):
    out.write(b"data %d\n" % len(b))
    out.write(b)
    out.write(b"\n")


paths = [f"dir{i % 40:02d}/sub{(i // 40) % 5}/file{i:05d}.go" for i in range(FILES)]
files = {p: [line() for _ in range(rng.randint(40, 200))] for p in paths}
t = 1_500_000_000
mark = 0
for n in range(1, COMMITS + 1):
    t += rng.randint(60, 7200)
    mark += 1
    out.write(b"commit refs/heads/main\nmark :%d\n" % mark)
    out.write(b"author Gen <gen@example.test> %d +0000\n" % t)
    out.write(b"committer Gen <gen@example.test> %d +0000\n" % t)
    data(f"change {n}: {line()}".encode())
    if n == 1:
        changed = paths
    else:
        changed = rng.sample(paths, rng.randint(1, 5))
        for p in changed:
            lines = files[p]
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(lines) + 1)
                op = rng.random()
                if op < 0.4 and lines:
                    lines[min(i, len(lines) - 1)] = line()
                elif op < 0.8:
                    lines.insert(i, line())
                elif lines:
                    del lines[min(i, len(lines) - 1)]
    for p in changed:
        out.write(b"M 100644 inline %s\n" % p.encode())
        data(("\n".join(files[p]) + "\n").encode())
    out.write(b"\n")
    if n % 100 == 0:
        out.write(b"tag v%d.%d.0\nfrom :%d\n" % (n // 1000, (n // 100) % 10 + (n // 1000) * 0, mark))
        out.write(b"tagger Gen <gen@example.test> %d +0000\n" % t)
        data(b"release %d" % n)
    if n % 400 == 0:
        out.write(b"reset refs/heads/maint-%d\nfrom :%d\n\n" % (n // 400, mark))
