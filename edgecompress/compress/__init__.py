"""Compression stages, one verb per module, each registered in STAGES as a base.Stage: (model, tokenizer, cfg, ctx,
teacher) -> base.StageResult. Shared pieces: kd.py (the KD loss and recovery fine-tune), importance.py (pruning
scores), train.py (the training loop), adaptor.py (what the distiller reads from any encoder)."""
