import sys

from core.serve import serve_main
from services.importer import RELEASES
from services.importer.app import create_importer_app

sys.exit(serve_main("importer", RELEASES, create_importer_app, description="Contact importer."))
