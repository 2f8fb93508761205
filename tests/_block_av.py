"""pytest plugin (``-p _block_av``, with tests/ on sys.path): ``import av`` fails, as on a bare
torch image such as the lent GPU machine's, which has no PyAV. tests/unit/test_gpu_check.py runs the
DALI-marked tests under it to check that those needing PyAV skip instead of erroring."""
from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from typing import Any, Optional, Sequence


class _NoPyAV(MetaPathFinder):
    def find_spec(self, name: str, path: Optional[Sequence[str]] = None, target: Any = None) -> None:
        if name == "av" or name.startswith("av."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by tests/_block_av.py)", name=name)
        return None


for _name in [m for m in sys.modules if m == "av" or m.startswith("av.")]:
    del sys.modules[_name]
sys.meta_path.insert(0, _NoPyAV())
