"""The streaming pipeline: stages, their wiring (:mod:`.wiring`) and the threaded runner."""
