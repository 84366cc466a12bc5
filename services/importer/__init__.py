"""Contact importer: CSV uploads into address books, honouring the suppression list.

Releases: 1.0 (stable) skips suppressed contacts; 1.1 refreshes their data (and breaks on empty
cells); 1.2 refreshes it with empty cells handled.  The code that differs is the suppressed-contact
policy, chosen in ``services.importer.releases``.
"""

RELEASES = ("1.0", "1.1", "1.2")
