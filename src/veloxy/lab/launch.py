"""`python -m veloxy.lab.launch [--gc-freeze] [--gc-gen0 N] -- ARGS`: veloxy with GC tuning.

Why: the study's GC section asks whether collector work shows in the tail. The CPython
analogues are `gc.freeze()` (move every object alive after start-up to a permanent generation
the collector never scans again; before a fork it also stops the collector from touching,
and so copying, the parent's pages in every worker) and a larger generation-0 threshold
(default 700 allocations: a short request allocates enough to trigger a young collection
every few requests). The lab measures both on and off without a change to the server: this
launcher imports the serving modules, applies the settings, then runs `veloxy ARGS`.

The freeze happens after the imports but before the config is loaded and the proxy is built
(the server has no start-up hook for it yet), so the app's own long-lived objects are not
frozen; they are few next to the modules'.
"""

from __future__ import annotations

import argparse
import gc
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m veloxy.lab.launch")
    parser.add_argument("--gc-freeze", action="store_true")
    parser.add_argument("--gc-gen0", type=int, metavar="N")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    rest = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    import veloxy.cli
    import veloxy.proxy.app
    import veloxy.server  # imported before the freeze, like the two above

    if opts.gc_gen0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(opts.gc_gen0, gen1, gen2)
    if opts.gc_freeze:
        gc.collect()
        gc.freeze()
    return veloxy.cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
