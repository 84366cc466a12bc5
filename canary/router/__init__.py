"""The data plane: a reverse proxy that splits, sticks, mirrors and fails over between tracks."""
