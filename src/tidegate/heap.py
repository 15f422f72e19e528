"""The garbage collector and the event loop: what start-up leaves behind is frozen.

A full (generation 2) collection walks every tracked object and holds the event loop while it
does. Start-up leaves a large heap (the configuration models, tokenizers, routes, the ORM's
mappers) that lives as long as the process, so without this every full collection walked it
again: 150 ms each, set off every few seconds while a 50,000-line batch was validated.
``gc.freeze()`` moves what exists now into a permanent generation that collections skip.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then freeze every surviving object; returns how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
