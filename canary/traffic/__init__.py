"""Realistic traffic for the services: generated CSVs, pixel hits and images."""
