"""``python -m cli``: the same as the ``streamrec`` script."""

from cli import main

main()
