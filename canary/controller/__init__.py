"""The rollout controller: specs, the state machine, its store, its HTTP API and alert webhook."""
