"""RecordIO without mxnet: the bytes mxnet 1.9.1 reads and writes, a shard writer, the host's folder layout.

``format`` holds the framing and the IRHeader, ``reader`` / ``writer`` the files, ``folder`` the
InsightFace / im2rec folder layouts, ``dataset`` the torch Dataset (imported on its own, since it
needs torch). Importing this package loads numpy only; cv2 is imported by the image helpers.
"""

from .folder import FaceRecFolder
from .format import IRHeader, RecordIOError, decode_image, encode_jpeg, pack, pack_img, unpack, unpack_img
from .reader import IndexedRecordIOReader, RecordIOReader
from .writer import FaceRecWriter, IndexedRecordIOWriter, RecordIOWriter

__all__ = [
    "IRHeader",
    "pack",
    "unpack",
    "pack_img",
    "unpack_img",
    "RecordIOReader",
    "RecordIOWriter",
    "IndexedRecordIOReader",
    "IndexedRecordIOWriter",
    "FaceRecWriter",
    "FaceRecFolder",
    "RecordIOError",
    "decode_image",
    "encode_jpeg",
]
