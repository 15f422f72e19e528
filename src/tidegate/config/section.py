"""The base of every config section, and the constants several sections share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

DEFAULT_HOME = Path(os.path.expanduser("~")) / ".cache" / "tidegate"
BUNDLED_MODEL = "bundled:smollm2-135m-instruct"
ProviderName = Literal["openai", "anthropic"]
"""An upstream's wire protocol, naming the ``upstream.client.Provider`` that speaks it."""


class Section(BaseModel):
    # The docstring under each field is its documentation; config_docs reads it from the source.
    # Not pydantic's use_attribute_docstrings: that parses the source of every class at import,
    # half of this package's import time, paid by every `tidegate` command.
    model_config = ConfigDict(extra="forbid", frozen=True)
