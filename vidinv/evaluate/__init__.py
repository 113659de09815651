"""Quality evaluation of the whole pipeline: RAVDESS (the FSE paper's Table 2) and single clips.

``vidinv bench ravdess|clip`` (:mod:`vidinv.cli.bench`); the metrics are in
:mod:`vidinv.metrics`. Importing this package loads nothing heavy.
"""
