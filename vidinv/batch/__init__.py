"""Many videos: one task per video, in this process or on Ray (``vidinv batch``).

A thin layer over :mod:`vidinv.pipeline`: each task runs the same stages and wiring as
``vidinv edit``/``invert`` (:func:`vidinv.pipeline.clip.process_video`); the benchmark
(:mod:`vidinv.evaluate.run`) runs its videos through the same executors.

* :mod:`vidinv.batch.files`: inputs (files, folders, globs) → tasks with unique output names;
  the "finished output" check; stale temporary files;
* :mod:`vidinv.batch.worker`: what a worker holds (models, loaded once) and runs per task;
* :mod:`vidinv.batch.executor`: in-process (one after another) or a Ray actor pool;
* :mod:`vidinv.batch.run`: progress bar, per-video records, the summary table and JSON.

Ray is optional (``pip install 'vidinv[ray]'``) and imported only when ``--ray`` is asked for.
"""
