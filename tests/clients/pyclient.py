#!/usr/bin/env python3
"""Drive a Python git client for goprox's client matrix (tests/e2e/clients.rs).

    pyclient.py pygit2|dulwich version
    pyclient.py pygit2|dulwich clone URL DEST [DEPTH]
    pyclient.py pygit2|dulwich fetch DIR

pygit2 is libgit2; dulwich is a pure-Python implementation. Both run with their defaults, as
a user of those libraries would. Any failure exits non-zero with the exception on stderr.
"""

import sys


def pygit2_client(cmd, args):
    import pygit2

    if cmd == "version":
        print(f"pygit2 {pygit2.__version__} (libgit2 {pygit2.LIBGIT2_VERSION})")
    elif cmd == "clone":
        url, dest = args[0], args[1]
        depth = int(args[2]) if len(args) > 2 else 0
        pygit2.clone_repository(url, dest, depth=depth)
    elif cmd == "fetch":
        repo = pygit2.Repository(args[0])
        repo.remotes["origin"].fetch()
    else:
        raise SystemExit(f"unknown command {cmd}")


def dulwich_client(cmd, args):
    import dulwich
    from dulwich import porcelain

    if cmd == "version":
        print("dulwich " + ".".join(str(p) for p in dulwich.__version__))
    elif cmd == "clone":
        url, dest = args[0], args[1]
        depth = int(args[2]) if len(args) > 2 else None
        repo = porcelain.clone(url, dest, depth=depth, errstream=sys.stderr.buffer)
        repo.close()
    elif cmd == "fetch":
        with porcelain.open_repo_closing(args[0]) as repo:
            porcelain.fetch(repo, "origin", errstream=sys.stderr.buffer)
    else:
        raise SystemExit(f"unknown command {cmd}")


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    client, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    {"pygit2": pygit2_client, "dulwich": dulwich_client}[client](cmd, args)


if __name__ == "__main__":
    main()
