"""Compression stages: torch model -> torch model, one verb per module, registered in STAGES."""
