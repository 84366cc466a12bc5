"""The canary framework: router, analysis, providers, platforms, controller, CLI."""
