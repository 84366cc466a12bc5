"""Image resizer: stores originals and answers resized variants (Pillow).

Releases: 1.0 (stable); 2.0, the port to a new framework, which keeps a database connection per
worker thread (so under concurrent load the pool runs dry and requests fail as if the database
were down) and ignores EXIF orientation (sideways photos, answered 200); 2.1, the port done right.
"""

RELEASES = ("1.0", "2.0", "2.1")
