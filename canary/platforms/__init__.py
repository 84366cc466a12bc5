"""Where releases run, behind one Protocol: local processes, Kubernetes."""
