"""The rollout controller: specs (``spec``), the pure state machine (``machine``), the loop that
observes and acts (``engine``, built by ``bootstrap``), every call into the judge (``judging``),
the route table it serves and the readers that confirm it (``routing``, ``publishing``), its
store, its HTTP API and alert webhook."""
