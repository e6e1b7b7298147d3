"""Data files shipped with Glimpse (icons, style sheets, vocabularies); never model weights."""
