"""edgecompress: fine-tuned BERT-family text model -> small int8 student -> on-device files, measured."""
__version__ = "0.1.0"
