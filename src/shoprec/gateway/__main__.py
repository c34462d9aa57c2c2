"""``python -m shoprec.gateway``: the gateway server (see :func:`shoprec.gateway.server.main`)."""

from shoprec.gateway.server import main

if __name__ == "__main__":  # not when a worker process re-imports it (multiprocessing spawn)
    main()
