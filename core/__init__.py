"""What every part shares: settings, errors, database, metrics, the app factory and serving."""
