"""Convert a GGUF checkpoint into a safetensors model directory vLLM can load.

Runs inside the engine venv (it needs torch and transformers, which tidegate's own environment
does not have), so it imports nothing from tidegate:

    <engine-venv>/bin/python -I gguf_to_hf.py SRC_DIR GGUF_NAME OUT_DIR INFO_JSON
"""

from __future__ import annotations

import importlib
import json
import sys


def convert(src_dir: str, gguf_name: str, out_dir: str, info_path: str) -> None:
    # Imported by name so type checkers in tidegate's torch-free environment need no stubs.
    transformers = importlib.import_module("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_name)
    model = transformers.AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_name)
    # The weights are dequantised on load; without this they would be saved as "GGUF-quantised"
    # and vLLM would look for a quantisation method that does not apply to plain tensors.
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    with open(info_path, "w") as f:
        json.dump(
            {
                "transformers": transformers.__version__,
                "chat_template": bool(getattr(tokenizer, "chat_template", None)),
            },
            f,
        )


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    convert(*sys.argv[1:5])
