"""Only the name the host imports; its image-folder route is not part of the tests."""


class ImageFolder:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("the torchvision stand-in has no ImageFolder (tests use RecordIO folders only)")
