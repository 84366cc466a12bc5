import sys

from core.serve import serve_main
from services.opens import RELEASES
from services.opens.app import create_opens_app

sys.exit(serve_main("opens", RELEASES, create_opens_app, description="Open tracking pixel and reports."))
