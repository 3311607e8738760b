"""Run spanpool's benchmarks: LocalSpanner's own speed, the pools, the asyncio pools, then
CacheSessionPool.

``./dev bench [--quick] [--seconds S]``: the flags are spanpool.bench.pools'; LocalSpanner's
benchmark runs with its defaults, or for 1 second per measurement with ``--quick``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from . import async_pools, cache, localspanner, pools


def main(argv: Sequence[str] | None = None) -> int:
    options = pools.parse_args(argv)
    saved = sys.argv
    sys.argv = [localspanner.__file__, *(["--seconds", "1"] if options.quick else [])]
    try:
        localspanner.main()
    finally:
        sys.argv = saved
    print()
    status = pools.run(options)
    print()
    status = async_pools.main(None if argv is None else list(argv)) or status
    print()
    # CacheSessionPool over its stores; it takes --quick only.
    return cache.main(["--quick"] if options.quick else []) or status


if __name__ == "__main__":
    sys.exit(main())
