"""Exporters: torch model + quantization intent -> one on-device file, plus a loader in that file's runtime."""
