"""Data shipped inside the package: the embedded default model (``default_model/``), the
pipeline presets (``pipelines/*.toml``) and the engine spec (``engines/generator.toml``).

The repository's top-level ``pipelines/`` and ``engines/`` folders hold the same files as
user-editable copies: edit one and pass it by path (``--preset my.toml``,
``--set engine.spec=my.toml``).
"""
