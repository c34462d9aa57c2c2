"""``python -m shoprec.storefront``: see :mod:`shoprec.storefront.server`."""

from shoprec.storefront.server import main

main()
