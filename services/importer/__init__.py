"""Contact importer: CSV uploads into address books, honouring the suppression list."""

RELEASES = ("1.0",)
