"""Model loading (HF id, local path, or the bundled GGUF model), LoRA, precision, losses."""
