"""Image resizer: stores originals and answers resized variants (Pillow)."""

RELEASES = ("1.0",)
