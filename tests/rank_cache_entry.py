"""``leadsel`` with a cache of its own per process (``$RANK_CACHE_ROOT/rank<RANK>``), as on nodes
whose caches are local: what test_distributed launches to give ranks different cache entries."""
import os
import sys

os.environ["LEADSEL_CACHE"] = os.path.join(os.environ["RANK_CACHE_ROOT"], f"rank{os.environ.get('RANK', '0')}")

from leadsel.cli import main  # noqa: E402

sys.exit(main())
