"""Keys under which the face stages keep their results in ``Frame.extras``."""

FACES = "faces"
"""list[FaceLandmarks]: every face DetectLandmarks found, largest first."""

CROP_QUAD = "crop_quad"
"""CropQuad: the crop AlignFace cuts (set by TrackFace, replaced by SmoothCrop)."""

CROP_QUAD_RAW = "crop_quad_raw"
"""CropQuad: the quad before SmoothCrop changed it."""

BRIDGED = "bridged"
"""bool: TrackFace interpolated this frame's face from its neighbours (no detection)."""

CROP_SIZE = "crop_size"
"""int: the side S of the crop that ``Frame.crop_from_frame`` maps to (set by AlignFace)."""
