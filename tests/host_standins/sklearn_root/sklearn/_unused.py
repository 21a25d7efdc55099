"""A class that fails loudly when a host function that the tests do not exercise tries to use it."""


class Unavailable:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} is a test stand-in: scikit-learn is not installed")
