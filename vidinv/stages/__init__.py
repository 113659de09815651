"""Every stage of the pipeline, in the order a frame walks through them.

A stage maps an iterator of :class:`~vidinv.frame.Frame` to an iterator of frames, in order,
and declares ``latency`` (frames held back); :mod:`vidinv.pipeline.wiring` puts them in
threads.

    face.py     DetectLandmarks → TrackFace → RequireFace → SmoothCrop → AlignFace
    model.py    EncodeFaces (→ latent.py SmoothLatents) → RenderFaces (edit + render)
    face.py     PasteBack
    output.py   KeepOriginal (first), SideBySide (last)

The algorithms they run live with their subject (:mod:`vidinv.face`, :mod:`vidinv.latent`,
:mod:`vidinv.engines`); importing this package loads nothing.
"""
