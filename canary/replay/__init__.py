"""The main job: replay the release of 13 April 2022 (``canary demo``) and report what happened."""
