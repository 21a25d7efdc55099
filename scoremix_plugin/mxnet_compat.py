"""``scoremix_plugin.mxnet_compat``: the name the integration docs give the mxnet stand-in.

The implementation lives in :mod:`scoremix_plugin.integration.mxnet_compat` (beside the launcher that
uses it); this module only makes ``from scoremix_plugin import mxnet_compat; mxnet_compat.install()``
work as documented. Importing it installs nothing.
"""

from scoremix_plugin.integration.mxnet_compat import SHIM_VERSION, ShimNotProvided, install, is_installed, uninstall

__all__ = ["SHIM_VERSION", "ShimNotProvided", "install", "is_installed", "uninstall"]
