"""The three services of the incident, each with its releases."""
