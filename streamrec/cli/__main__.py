"""``python -m streamrec.cli``: the same as the ``streamrec`` script."""

from streamrec.cli import main

main()
