"""Entry points that compose the xsample library from configs/ (the app layer; Hydra lives here)."""
