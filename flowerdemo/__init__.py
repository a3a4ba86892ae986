"""flowerdemo: recognise the 102 Oxford Flowers-102 species in a photo, and say when it is not a flower."""

__version__ = "0.1.0"
