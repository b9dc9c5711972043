"""Image input at the package boundary: the :class:`Image` type and :func:`load_image`.

Everything inside the package works on one pixel contract: :class:`Image`, whose ``rgb`` is a float32
``H x W x 3`` array in ``[0, 1]`` (sRGB, straight, not premultiplied) with an optional float32 ``H x W``
``alpha`` in ``[0, 1]``. :func:`load_image` turns paths, bytes, PIL images and numpy arrays into that
contract, and every way an input can be bad into :class:`~optimizer.errors.InvalidImageError` (also a
``ValueError`` and an ``OptimizerError``) whose message names the source and the reason: empty, truncated or
corrupt files, non-images, unsupported formats (named when Pillow knows them, never decoded), zero size,
sizes over the pixel limit, refused animations, missing paths, directories. Library exceptions never escape
and are not chained.

What loading does, in order:

* refuses what is not a regular file (a FIFO, a device such as ``/dev/zero``, a socket, a folder) without
  reading from it, so a path can neither hang a load nor feed it endless bytes;
* reads the header only (format, size, frame count) and enforces the pixel limit and the memory budget
  (:mod:`optimizer.imageio.limits`) *before* any pixel is decoded, so a small file that claims a huge size
  costs nothing. PNG files are also checked end to end (every chunk CRC, up to IEND) because Pillow would
  load a PNG that lost its last bytes or has damaged image data;
* decodes JPEG strictly (libjpeg-turbo through ``simplejpeg``): a JPEG whose data ends early or is corrupt
  is an error, never an image grey-filled past the damage (Pillow's own decoder lets both through). Formats
  without checksums over their image data (WebP, AVIF, GIF, TIFF, BMP) cannot reveal flipped bits: such a
  file loads, or fails with an :class:`~optimizer.errors.InvalidImageError`, as in any viewer;
* decodes the first frame and splits off alpha (``LA``, ``RGBA``, ``PA``, premultiplied ``RGBa``/``La``,
  ``P`` with ``tRNS`` entries, ``L``/``RGB``/``I;16`` with a ``tRNS`` colour key); an alpha channel that is
  opaque everywhere is dropped (``info.had_alpha`` is False);
* converts colour through an embedded ICC profile to sRGB with LittleCMS (``info.icc_converted``). When the
  conversion moves no pixel by more than one 8-bit level (an embedded sRGB profile, or an equivalent one) the
  file's own pixels are kept, so a profile adds no rounding noise; this is decided on the pixels, never on
  the profile's name. A profile LittleCMS cannot read, or one for another colour space, is ignored with an
  :class:`IccWarning` and the pixels are taken as sRGB. CMYK without a profile uses Pillow's naive
  conversion; ``LAB`` images use the CIELAB D50 profile. PNG ``gAMA``/``cHRM`` chunks are not applied.
  Colours of a wide-gamut RGB profile (Display P3, Adobe RGB) outside sRGB are clipped by the conversion and
  a :class:`GamutWarning` gives their share. With ``color="keep"`` the pixels of an RGB profile stay in it
  and ``image.profile`` holds it: scores still compare in sRGB (:meth:`Image.for_scoring` converts), and
  encoders embed the profile with the pixels;
* keeps the file's metadata beside the pixels (``image.metadata``: EXIF, ICC and XMP bytes,
  :mod:`optimizer.imageio.metadata`); which of it an output keeps is a :class:`MetadataPolicy`;
* applies the EXIF orientation (tag 0x0112, which Pillow also reads from XMP); ``info.exif_transposed``
  says whether pixels were turned. A broken EXIF block costs the orientation (an :class:`ImageWarning`),
  never the pixels;
* scales to float32 in ``[0, 1]``.

Warnings: Pillow's own ``UserWarning`` about a file (corrupt EXIF, malformed MPO...) is re-issued as an
:class:`ImageWarning` that names the source; its ``DecompressionBombWarning`` never escapes.

Pixel limit: :data:`DEFAULT_MAX_PIXELS` (100 megapixels), per call with ``load_image(..., max_pixels=N)``
(what libraries and services should do), or as the process default with :func:`set_max_pixels`. Nothing in
this package changes Pillow's globals (``PIL.Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``):
see :mod:`optimizer.imageio.limits`. An image over the limit is an :class:`~optimizer.errors.ImageTooLargeError`
(an :class:`InvalidImageError`) that gives its size and the limit; one whose decoding would need more memory
than the budget is a :class:`~optimizer.errors.ResourceLimitError` (exit code 3 in the CLI).

Bit depth (``info.bit_depth`` is the precision of the loaded pixels, not of the file):

* 8-bit sources (RGB, L, P, CMYK, ...) give multiples of 1/255 (``bit_depth`` 8; bilevel ``1`` gives 1).
* 16-bit greyscale PNG/TIFF (``I;16``) keeps full 16-bit precision, scaled by 1/65535 (``bit_depth`` 16).
* 16-bit colour PNG (RGB, RGBA, grey+alpha) and 16-bit RGB/RGBA TIFF: Pillow reads these at 8 bits, so
  they are decoded with imagecodecs (installed by the ``jxl`` extra) at full precision (``bit_depth`` 16),
  including a PNG ``tRNS`` key and TIFF premultiplied alpha; a non-sRGB ICC profile is then applied by
  LittleCMS at 16 bits into float. Without imagecodecs, for an animated 16-bit PNG or an unusual TIFF
  layout, Pillow's 8-bit reading is used (``bit_depth`` 8) and a :class:`PrecisionWarning` says so. 16-bit
  data with a non-sRGB profile and no imagecodecs is converted at 8 bits (``bit_depth`` 8).
* 32-bit integer images (``I``) must hold values in ``[0, 65535]`` and are read as 16-bit data; float images
  (``F``, float arrays) must hold finite values in ``[0, 1]``. Anything else is refused, never clipped. An ICC
  profile on float pixels is not applied (an :class:`IccWarning` says so).
* numpy arrays: uint8, uint16, bool and float in ``[0, 1]``; ``H x W``, or ``H x W x 1|2|3|4`` where 2 and 4
  channels carry alpha last.

Encoders see 8 bits per channel (:meth:`Image.to_uint8`), whatever was loaded.

Alpha: scores are computed on the image composited over a stated background (opaque white by default, see
:meth:`Image.for_scoring` and :meth:`Image.to_tensor`), because that is what a viewer sees on a page, and it
makes fully transparent pixels (whose colour nobody sees) count for nothing. Encoders that support alpha
(WebP, AVIF, PNG, JPEG XL) keep it as straight alpha next to the colour (:meth:`Image.to_uint8` and
:meth:`Image.to_pil` with ``keep_alpha=True``, the default); JPEG encodes the image composited over the same
background (``keep_alpha=False``).

Animated and multi-image files (GIF, APNG, animated WebP/AVIF/JPEG XL, multi-page TIFF): the first frame is
used, whatever frame a PIL image passed in was on, and ``info.n_frames`` says how many there are;
``animated="error"`` refuses them instead. MPO files (phone JPEGs carrying a depth map or stereo pair) are
still photos: their primary image is used and ``animated="error"`` does not refuse them.

JPEG XL is decoded by imagecodecs (the ``jxl`` extra) after its size has been read from the codestream
header; libjxl applies its orientation, and no ICC conversion is made by this module.
"""

from ._decode import load_image
from ._probe import SUPPORTED_FORMATS
from ._warn import GamutWarning, IccWarning, ImageWarning, PrecisionWarning
from .image import COLOR_MODES, WHITE, ColorMode, Image, ImageInfo, ImageSource
from .limits import DEFAULT_MAX_PIXELS, get_max_pixels, set_max_pixels
from .metadata import DEFAULT_METADATA, METADATA_KINDS, Metadata, MetadataPolicy, MetadataWarning

__all__ = [
    "COLOR_MODES",
    "ColorMode",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_METADATA",
    "GamutWarning",
    "Image",
    "ImageInfo",
    "ImageSource",
    "IccWarning",
    "ImageWarning",
    "METADATA_KINDS",
    "Metadata",
    "MetadataPolicy",
    "MetadataWarning",
    "PrecisionWarning",
    "SUPPORTED_FORMATS",
    "WHITE",
    "get_max_pixels",
    "load_image",
    "set_max_pixels",
]
