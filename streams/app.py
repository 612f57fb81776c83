"""The app object for ``faust -A streams.app worker``, built from the environment.

``streamrec worker`` does not import this module; it calls
:func:`streams.factory.create_app` with its own settings.
"""

from streamrec.settings import Settings
from streams.factory import create_app

app = create_app(Settings())
