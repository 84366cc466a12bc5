import sys

from core.serve import serve_main
from services.resizer import RELEASES
from services.resizer.app import create_resizer_app

sys.exit(serve_main("resizer", RELEASES, create_resizer_app, description="Image resizer."))
