"""``python tests/_slow_validation.py build-engine ...``: the fastvid CLI with the engine
validation held for a while after it starts (a marker file says when), so that a test can signal
the build exactly during validation. Nothing else is changed."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engines.core as core  # noqa: E402

_validate = core._validate


def _held_validate(*args, **kwargs):
    Path(os.environ["FASTVID_TEST_MARK"]).write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("FASTVID_TEST_HOLD_S", "120")))
    return _validate(*args, **kwargs)


core._validate = _held_validate

if __name__ == "__main__":
    from fastvid.cli import main

    sys.argv[0] = "fastvid"
    main()
