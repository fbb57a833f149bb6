"""A placeholder string for a picture: a BlurHash, so a client can paint a blurred stand-in of
the right colours while the thumbnail loads.

BlurHash (the `blurhash` package, pure Python, maintained) rather than ThumbHash: the Python
ThumbHash packages have had no release since 2023, and BlurHash has decoders for every client
platform (web, iOS, Android). The width and height of the layout come from the media's own
fields, so BlurHash not carrying the aspect ratio costs nothing.
"""

from typing import Final

import blurhash
from PIL import Image

# 4 x 3 components (4 x 4 for a square): ~28 characters, the size the BlurHash authors suggest.
_COMPONENTS: Final = 4
# BlurHash keeps only the lowest frequencies: 32 px hold all of them and cost ~10 ms to encode.
_SAMPLE_SIZE: Final = 32


def placeholder_for(image: Image.Image) -> str | None:
    """The BlurHash of an RGB image (a thumbnail); None if it cannot be computed."""
    sample = image.convert("RGB")
    sample.thumbnail((_SAMPLE_SIZE, _SAMPLE_SIZE), Image.Resampling.BOX)
    x_components, y_components = _COMPONENTS, _COMPONENTS
    if sample.width > sample.height:
        y_components = 3
    elif sample.height > sample.width:
        x_components = 3
    width, height = sample.size
    data = sample.tobytes()  # RGB, row by row
    rows = [
        [tuple(data[i : i + 3]) for i in range(row * width * 3, (row + 1) * width * 3, 3)]
        for row in range(height)
    ]
    try:
        value = blurhash.encode(rows, components_x=x_components, components_y=y_components)
    except Exception:
        return None
    return str(value)
